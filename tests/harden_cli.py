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
