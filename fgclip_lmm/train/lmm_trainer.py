"""The `train-lmm` command: LLaVA-style instruction tuning (`align`: projector only; `finetune`: LLM full or LoRA).

Clusters: `deepspeed [--num_gpus N | --hostfile H] train_lmm/train.py --config CFG [--key value ...]`.
One process: `fgclip-lmm train-lmm --config CFG [--key value ...]`.
This module stays light (config and help only); the task (`lmm_task.LmmTask`) and the loop (`loop.py`) load once
the config is valid.
"""
from __future__ import annotations

from .command import TrainerSpec, run_command
from .lmm_config import LmmTrainConfig

PRESETS = "lmm"  # kind of shipped presets (fgclip_lmm/presets/lmm/)
SPEC = TrainerSpec("train-lmm", LmmTrainConfig, PRESETS, "fgclip_lmm.train.lmm_task:LmmTask")


def main(argv: list[str] | None = None) -> int:
    return run_command(SPEC, argv)
