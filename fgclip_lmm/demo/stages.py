"""Resumable demo stages: each stage records what it was run with, and a rerun skips it only when the record
matches and its outputs verify (HF checkpoints load their config and safetensors header, JSON files parse)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open


def verify_hf_dir(path: Path) -> bool:
    """A complete HF checkpoint: config.json parses and every safetensors file opens."""
    try:
        json.loads((path / "config.json").read_text())
        files = list(path.glob("*.safetensors"))
        for file in files:
            with safe_open(str(file), "pt") as handle:
                list(handle.keys())
        return bool(files)
    except (OSError, ValueError):
        return False


def verify_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


@dataclass
class Stage:
    name: str
    run: Callable[[], None]
    outputs: list[tuple[Path, Callable[[Path], bool]]]
    fingerprint: dict


class StageRunner:
    def __init__(self, out: Path):
        self.out = out
        self.record_file = out / "stages.json"
        self.records = json.loads(self.record_file.read_text()) if self.record_file.is_file() else {}
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def complete(self, stage: Stage) -> bool:
        record = self.records.get(stage.name)
        return bool(record and record.get("fingerprint") == stage.fingerprint
                    and all(check(path) for path, check in stage.outputs))

    def execute(self, stage: Stage, bar) -> None:
        if self.complete(stage):
            bar.write(f"[demo] {stage.name}: complete, outputs verified - skipped")
            return
        bar.write(f"[demo] {stage.name}: running")
        start = time.perf_counter()
        stage.run()
        failed = [str(p) for p, check in stage.outputs if not check(p)]
        if failed:
            raise RuntimeError(f"demo stage {stage.name!r} finished but its outputs do not verify: {failed}")
        self.records[stage.name] = {"fingerprint": stage.fingerprint, "seconds": round(time.perf_counter() - start, 1)}
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records, indent=2))
        os.replace(tmp, self.record_file)

    def cli(self, name: str, args: list[str]) -> None:
        """Run one `fgclip-lmm` job in a subprocess (DeepSpeed runs must not share the demo's process);
        stdout goes to OUT/logs/<name>.log, progress bars (stderr) to the terminal."""
        env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"), "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        log = self.out / "logs" / f"{name}.log"
        with open(log, "w") as handle:
            proc = subprocess.run([sys.executable, "-m", "fgclip_lmm.cli", *args], stdout=handle, env=env)
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"demo step {name!r} failed (exit {proc.returncode}); see {log}\n{tail}")
