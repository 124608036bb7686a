"""Resumable demo stages: each stage records what it was run with, and a rerun skips it only when the record
matches and its outputs verify (HF checkpoints load their config and safetensors header, JSON files parse)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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
    lane: str | None = None  # consecutive stages with lanes run lane by lane in parallel (`run_stages`)


def lane_groups(stages: list[Stage]) -> list[list[Stage]]:
    """Stages in order, consecutive laned stages merged into one group (one-stage groups otherwise)."""
    groups: list[list[Stage]] = []
    for stage in stages:
        if stage.lane is not None and groups and groups[-1][0].lane is not None:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


class StageRunner:
    def __init__(self, out: Path):
        self.out = out
        self.lock = threading.Lock()
        self.local = threading.local()  # the running stage's thread budget, read by `cli`
        self.record_file = out / "stages.json"
        self.records = json.loads(self.record_file.read_text()) if self.record_file.is_file() else {}
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def complete(self, stage: Stage) -> bool:
        record = self.records.get(stage.name)
        return bool(record and record.get("fingerprint") == stage.fingerprint
                    and all(check(path) for path, check in stage.outputs))

    def _run_lane(self, lane: list[Stage], bar, threads: int, errors: list[BaseException]) -> None:
        try:
            for stage in lane:
                self.execute(stage, bar, threads=threads)
                bar.update()
        except BaseException as error:  # reported after the other lanes finish
            errors.append(error)

    def execute(self, stage: Stage, bar, threads: int | None = None) -> None:
        if self.complete(stage):
            bar.write(f"[demo] {stage.name}: complete, outputs verified - skipped")
            return
        bar.write(f"[demo] {stage.name}: running")
        start = time.perf_counter()
        self.local.threads = threads
        stage.run()
        failed = [str(p) for p, check in stage.outputs if not check(p)]
        if failed:
            raise RuntimeError(f"demo stage {stage.name!r} finished but its outputs do not verify: {failed}")
        with self.lock:  # lanes finish stages concurrently
            self.records[stage.name] = {"fingerprint": stage.fingerprint,
                                        "seconds": round(time.perf_counter() - start, 1)}
            tmp = self.record_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.records, indent=2))
            os.replace(tmp, self.record_file)

    def run_stages(self, stages: list[Stage], bar) -> None:
        """Execute every stage; a group of laned stages runs one thread per lane (each lane in order), with the
        CPU's threads shared between the lanes' jobs, and fails if any lane failed."""
        for group in lane_groups(stages):
            lanes: dict[str, list[Stage]] = {}
            for stage in group:
                lanes.setdefault(stage.lane or stage.name, []).append(stage)
            if len(lanes) == 1:
                for stage in group:
                    bar.set_postfix_str(stage.name)
                    self.execute(stage, bar)
                    bar.update()
                continue
            cores = os.cpu_count() or 1
            errors: list[BaseException] = []
            bar.set_postfix_str(" | ".join(lanes))
            workers = [threading.Thread(target=self._run_lane, args=(lane, bar, max(1, cores // len(lanes)), errors))
                       for lane in lanes.values()]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if errors:
                raise errors[0]

    def cli(self, name: str, args: list[str]) -> None:
        """Run one `fgclip-lmm` job in a subprocess (DeepSpeed runs must not share the demo's process);
        stdout goes to OUT/logs/<name>.log, progress bars (stderr) to the terminal."""
        env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"), "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        threads = getattr(self.local, "threads", None)
        if threads:  # parallel lanes: each job gets its share of the cores
            env["OMP_NUM_THREADS"] = str(threads)
        log = self.out / "logs" / f"{name}.log"
        with open(log, "w") as handle:
            proc = subprocess.run([sys.executable, "-m", "fgclip_lmm.cli", *args], stdout=handle, env=env)
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"demo step {name!r} failed (exit {proc.returncode}); see {log}\n{tail}")
