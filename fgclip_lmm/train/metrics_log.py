"""Training logs: a progress bar with the key numbers, lines written above it, one JSON row per logged step
(`metrics.jsonl`) and TensorBoard scalars.

A resumed run continues both files from the checkpoint's step: rows written after that step by the interrupted run
are dropped first (and TensorBoard purges its events past it), so `metrics.jsonl` never holds a step twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

METRICS_NAME = "metrics.jsonl"


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep the rows of steps <= `last_step` (a half-written last line is dropped too); return how many went."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
    return dropped


class MetricsLogger:
    """Rank 0 writes `metrics.jsonl` and TensorBoard events; other ranks only count steps."""

    def __init__(self, out_dir: Path, total_steps: int, start_step: int, enabled: bool, desc: str):
        self.enabled = enabled
        self.path = out_dir / METRICS_NAME
        self.dropped = truncate_metrics(self.path, start_step) if enabled else 0
        self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, disable=not enabled, dynamic_ncols=True)
        self.jsonl = open(self.path, "a") if enabled else None
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def step(self, n: int = 1) -> None:
        self.bar.update(n)

    def log(self, step: int, record: dict[str, float], show: tuple[str, ...] = ()) -> None:
        """One row for `step` (call once per step with everything measured at it)."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **record}) + "\n")
        self.jsonl.flush()
        for key, value in record.items():
            self.tb.add_scalar(key, value, step)
        shown = {k: f"{record[k]:.4g}" for k in show if k in record}
        if shown:
            self.bar.set_postfix(shown, refresh=False)

    def write(self, text: str) -> None:
        """A console line above the progress bar (rank 0 only)."""
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.jsonl.close()
            self.tb.close()
