"""The `train-clip` command: FG-CLIP stage 1 / stage 2 on the DeepSpeed engine.

Clusters: `deepspeed [--num_gpus N | --hostfile H] train_clip/train.py --config CFG [--key value ...]`.
One process: `fgclip-lmm train-clip --config CFG [--key value ...]` (same engine, gloo on a CPU).
This module stays light (config and help only); the task (`clip_task.ClipTask`) and the loop (`loop.py`) load once
the config is valid.
"""
from __future__ import annotations

from .clip_config import ClipTrainConfig
from .command import TrainerSpec, run_command

PRESETS = "clip"  # kind of shipped presets (fgclip_lmm/presets/clip/)
SPEC = TrainerSpec("train-clip", ClipTrainConfig, PRESETS, "fgclip_lmm.train.clip_task:ClipTask")


def main(argv: list[str] | None = None) -> int:
    return run_command(SPEC, argv)
