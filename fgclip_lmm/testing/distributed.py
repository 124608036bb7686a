"""Run a script as N local gloo ranks (the 2-process checks that a gathered loss equals the single-process one)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def run_gloo_ranks(script_text: str, workdir: Path, out: Path, world: int = 2, timeout: int = 120) -> None:
    """Write `script_text` to `workdir` and run it as ranks 0..world-1 (MASTER_ADDR/PORT, RANK, WORLD_SIZE set);
    each rank gets `out` as its argument. Raises when a rank fails."""
    script = workdir / "ranks.py"
    script.write_text(script_text)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world)}
    procs = [subprocess.Popen([sys.executable, str(script), str(out)], env={**env, "RANK": str(r)})
             for r in range(world)]
    codes = [p.wait(timeout=timeout) for p in procs]
    if any(codes):
        raise RuntimeError(f"gloo ranks exited with {codes} ({script})")
