"""`TrainTask`: what a trainer plugs into the one training loop (`loop.run_training`).

A task owns what differs between `train-clip` and `train-lmm`: how its model is built (`build_model`, the one place
for model construction), its data and sampler (`build_data`), parameter groups and learning-rate schedule, the
forward pass of a micro-batch, per-log-step metrics of its own (`log_metrics`, the one hook for extra metrics),
periodic evaluation and the export of the final model. The loop owns everything else.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import FGClipError


class TrainDataError(FGClipError, ValueError):
    """The data leaves nothing to train on (no usable record, or too few for one optimizer step)."""


@contextmanager
def reading(data_path: str) -> Iterator[None]:
    """Around a reader's construction: its `ValueError`s (no record left after skipping, an empty file, too few
    samples for the ranks) become one-line `TrainDataError`s naming `data_path`; `BadRecordError` (under
    `on_bad_record: error`) passes unchanged, it already names file, record and field."""
    from ..data.bad_records import BadRecordError

    try:
        yield
    except BadRecordError:
        raise
    except ValueError as error:
        raise TrainDataError(f"data_path {data_path}: {error}") from error


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LambdaLR factor: linear warmup over `warmup` steps, then cosine from 1 down to `min_ratio` at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing on an HF model (the official trainers force non-reentrant).
    transformers 5 renamed `gradient_checkpointing_enable` (now a deprecated alias that warns on every run)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class TrainTask(ABC):
    """Subclasses set `command` (e.g. "train-clip") and implement the abstract hooks. The loop sets `rank`, `world`
    and `write` (a console line above the progress bar) before calling `build_model`."""

    command = "train"
    units_per_micro_batch = 1  # sampler positions one micro-batch consumes (its samples, or 1 for a batch sampler)
    show: tuple[str, ...] = ("loss",)  # metrics shown on the progress bar
    eval_metric: str | None = None  # the evaluation key (higher is better) whose best value the summary reports

    def __init__(self, cfg):
        self.cfg = cfg
        self.rank, self.world = 0, 1
        self.write: Callable[[str], None] = print
        self.module: torch.nn.Module | None = None  # what the DeepSpeed engine wraps (set by build_model)
        self.sampler = None  # resumable: position, state_dict(consumed), load_state_dict (set by build_data)
        self.report = None  # report.DataReport, set by build_data before it reads any file

    @property
    def title(self) -> str:
        return f"{self.command} {getattr(self.cfg, 'stage', '')}".strip()

    @abstractmethod
    def build_model(self, resuming: bool) -> None:
        """Construct the model (and its tokenizer/processor) and set `self.module`."""

    @abstractmethod
    def build_data(self) -> None:
        """Set `self.report` first, then read the data and set `self.sampler` (this rank's share)."""

    @property
    @abstractmethod
    def num_samples(self) -> int:
        """Usable samples after the reader's checks (all ranks together)."""

    @abstractmethod
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches this rank runs per epoch."""

    @abstractmethod
    def batches(self) -> Iterable[dict]:
        """One epoch of micro-batches from the sampler's current position."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """AdamW groups (`params`, `weight_decay`, `lr`) over `self.module`'s trainable parameters."""

    @abstractmethod
    def lr_factor(self, total_steps: int) -> Callable[[int], float]:
        """The LambdaLR schedule."""

    @abstractmethod
    def forward(self, engine, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms of one micro-batch; "loss" is the one to backpropagate."""

    @abstractmethod
    def count(self, batch: dict) -> dict[str, float]:
        """Per-micro-batch counters summed over a log interval; "samples" and "flops" (this rank's) are required."""

    def log_metrics(self, batch: dict, terms: dict[str, torch.Tensor], interval: dict[str, float], elapsed: float
                    ) -> dict[str, float]:
        """Extra metrics for a logged step, from its last micro-batch and the interval's counters (this rank)."""
        return {}

    def evaluate(self, step: int) -> dict[str, float]:
        """Periodic evaluation results to log at `step`, or {} when none is due."""
        return {}

    def checkpoint_export(self, engine, staging: Path) -> None:  # noqa: B027  (optional hook, nothing by default)
        """Extra files inside each checkpoint (runs on every rank: ZeRO-3 gathers collectively)."""

    def describe(self) -> str:
        """Extra facts for the start line."""
        return ""

    @abstractmethod
    def export(self, engine, out: Path) -> Path:
        """Write the final model under `out` (collective) and return its directory."""
