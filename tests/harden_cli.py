"""Running `fgclip-lmm` in a subprocess for the bad-input tests: exit code, stdout and the stderr lines."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """stderr lines that are the command's error report (progress bars and library logs left out)."""
        return [line for line in self.err.splitlines() if line.startswith("fgclip-lmm ")]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 300) -> CliResult:
    """`python -m fgclip_lmm.cli ARGS` with this checkout first on the path, offline."""
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "FGCLIP_DEBUG")}
    base.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false", DS_ACCELERATOR="cpu")
    base.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "fgclip_lmm.cli", *map(str, args)], capture_output=True, text=True,
                          env=base, cwd=cwd, timeout=timeout, check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# Runs several `fgclip-lmm` command lines in ONE interpreter (imports paid once), each through the real
# dispatcher `fgclip_lmm.cli.main`, with its own environment additions and captured stdout / stderr. An exception
# escaping the dispatcher is recorded as exit code "uncaught" with its traceback on stderr.
_BATCH_DRIVER = r"""
import contextlib, io, json, os, sys, traceback
from fgclip_lmm.cli import main
results = []
for argv, env in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = "uncaught"
    os.environ.clear()
    os.environ.update(saved)
    results.append([code, out.getvalue(), err.getvalue()])
print("HARDEN_RESULTS " + json.dumps(results))
"""


def run_cli_batch(calls: list[tuple[list, dict[str, str]]], timeout: int = 600) -> list[CliResult]:
    """`fgclip-lmm ARGV` for each (argv, extra env) in one subprocess; one `CliResult` per call."""
    import json

    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "FGCLIP_DEBUG")}
    base.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false", DS_ACCELERATOR="cpu")
    payload = json.dumps([[list(map(str, argv)), env] for argv, env in calls])
    proc = subprocess.run([sys.executable, "-c", _BATCH_DRIVER, payload], capture_output=True, text=True, env=base,
                          timeout=timeout, check=False)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("HARDEN_RESULTS ")]
    if proc.returncode != 0 or not marker:
        raise AssertionError(f"batch driver failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return [CliResult(code, out, err) for code, out, err in json.loads(marker[-1][len("HARDEN_RESULTS "):])]
