"""Training logs: a progress bar with the key numbers, one JSON line per log step, and TensorBoard scalars."""
from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm


class MetricsLogger:
    """Rank 0 writes `metrics.jsonl` (appending, so a resumed run continues the file) and TensorBoard events."""

    def __init__(self, out_dir: Path, total_steps: int, start_step: int, enabled: bool, desc: str):
        self.enabled = enabled
        self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, disable=not enabled, dynamic_ncols=True)
        self.jsonl = open(out_dir / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def step(self, n: int = 1) -> None:
        self.bar.update(n)

    def log(self, step: int, record: dict[str, float], show: tuple[str, ...] = ()) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **record}) + "\n")
        self.jsonl.flush()
        for key, value in record.items():
            self.tb.add_scalar(key, value, step)
        self.bar.set_postfix({k: f"{record[k]:.4g}" for k in show if k in record}, refresh=False)

    def write(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.jsonl.close()
            self.tb.close()
