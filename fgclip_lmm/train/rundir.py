"""The output directory of a training run: checked writable at start and held by one live run at a time.

`RunLock` is a lock file `OUTPUT_DIR/run.lock` holding the owner's pid, host and start time, created exclusively
(`O_CREAT | O_EXCL`). A second run on the same directory is refused while the owner is alive, so it can neither
delete the owner's half-written checkpoints nor interleave its metrics. A lock whose owner is gone (a run killed
with SIGKILL, a crashed node's run on this host) is stale: the new run takes it over and says so. A lock from
another host cannot be checked and is treated as live; the message says which file to remove if that run is gone.

Standard library only: it runs before torch is imported, so these errors answer in well under a second.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import FGClipError

LOCK_NAME = "run.lock"


class RunDirError(FGClipError, ValueError):
    """The output directory cannot be written, or another live run holds it."""


def ensure_writable(out: Path) -> None:
    """Create `out` (and parents) and prove a file can be written there; raise RunDirError naming the directory."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise RunDirError(f"config key 'output_dir': cannot write to {out} ({error.strerror or error})") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """`acquire()` takes `out/run.lock` for this process (returning a note when it took over a stale lock);
    `release()` removes it if this process still owns it."""

    def __init__(self, out: Path):
        self.path = out / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.held = False

    def acquire(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self._take_over()
        with os.fdopen(fd, "w") as handle:
            json.dump(self.owner, handle)
        self.held = True
        return None

    def _take_over(self) -> str:
        previous = self._read()
        if not previous and time.time() - self._mtime() < 5:  # another run is writing its lock right now
            raise RunDirError(f"output_dir {self.path.parent} is being locked by another run just now")
        pid, host = previous.get("pid"), previous.get("host")
        if isinstance(pid, int) and host != self.owner["host"]:
            raise RunDirError(f"output_dir {self.path.parent} is locked by pid {pid} on host {host} (since "
                              f"{previous.get('started')}); if that run is gone, remove {self.path}")
        if isinstance(pid, int) and pid != self.owner["pid"] and pid_alive(pid):
            raise RunDirError(f"output_dir {self.path.parent} is in use by a live run (pid {pid}, since "
                              f"{previous.get('started')}); wait for it or choose another output_dir")
        staging = self.path.with_name(f".{LOCK_NAME}.{self.owner['pid']}")
        staging.write_text(json.dumps(self.owner))
        os.replace(staging, self.path)
        if self._read().get("pid") != self.owner["pid"]:  # another process took it over at the same moment
            raise RunDirError(f"output_dir {self.path.parent} was just taken by another run")
        self.held = True
        who = f"pid {pid}" if isinstance(pid, int) else "an unreadable owner"
        return f"output_dir {self.path.parent}: took over the stale lock of {who} (no longer running)"

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _read(self) -> dict:
        try:
            value = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def release(self) -> None:
        if self.held and self._read().get("pid") == self.owner["pid"]:
            self.path.unlink(missing_ok=True)
        self.held = False
