"""Process-group and DeepSpeed set-up shared by both trainers (GPU clusters and CPU machines alike).

Multi-GPU and multi-node runs come through the `deepspeed` launcher, which sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_*; a plain `fgclip-lmm train-*` call is one process and gets those variables filled in here (DeepSpeed would
otherwise look for MPI).
"""
from __future__ import annotations

import json
import os
import socket

import torch

from ..presets import resolve_deepspeed_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_gpu() -> bool:
    return torch.cuda.is_available()


def init_distributed(cpu_shm_allreduce: bool = False) -> tuple[int, int, int]:
    """Initialise torch.distributed through DeepSpeed (nccl on GPU, gloo on CPU); return (rank, world, local)."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    if not on_gpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import importlib

    import deepspeed

    if not on_gpu() and not cpu_shm_allreduce:
        # DeepSpeed JIT-compiles a shared-memory all-reduce for CPU (~40 s once); it is only a fast path.
        # (`deepspeed.comm.torch` as an attribute is the torch package itself, hence importlib.)
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu() else "gloo")
    patch_scalar_parameter_broadcast()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if on_gpu():
        torch.cuda.set_device(local)
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local


def patch_scalar_parameter_broadcast() -> None:
    """DeepSpeed 0.19 broadcasts parameters as `p.data.view(torch.uint8)`, which fails for 0-dim tensors such as
    CLIP's `logit_scale` (and FG-CLIP's three temperatures, scalars in the official state dict). Give scalars a
    1-element shape only for the broadcast."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    original = DeepSpeedEngine._broadcast_model
    if getattr(original, "_fgclip_patched", False):
        return

    def broadcast(engine):
        scalars = [p for p in engine.module.parameters() if p.dim() == 0]
        for p in scalars:
            p.data = p.data.reshape(1)
        try:
            original(engine)
        finally:
            for p in scalars:
                p.data = p.data.reshape(())

    broadcast._fgclip_patched = True
    DeepSpeedEngine._broadcast_model = broadcast

    # ZeRO-3 partitions each parameter through the same uint8 view; a scalar becomes a 1-element parameter there
    # (its consolidated export is reshaped back by `restore_scalar_shapes`).
    from deepspeed.runtime.zero.partition_parameters import Init

    original_init_param = Init._zero_init_param

    def init_param(self, param):
        if param.dim() == 0:
            param.data = param.data.reshape(1)
        return original_init_param(self, param)

    Init._zero_init_param = init_param


def restore_scalar_shapes(state: dict, module: torch.nn.Module) -> dict:
    """Give parameters that ZeRO-3 stored as 1-element tensors their declared scalar shape again."""
    scalars = {name for name, p in module.named_parameters() if getattr(p, "ds_shape", p.shape) == torch.Size([1])
               and hasattr(p, "ds_shape")}
    return {k: (v.reshape(()) if k in scalars and v.numel() == 1 else v) for k, v in state.items()}


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if on_gpu() else torch.device("cpu")


def use_bf16(precision: str) -> bool:
    if precision not in {"auto", "bf16", "fp32"}:
        raise ValueError(f"precision={precision!r}: expected auto, bf16 or fp32")
    if precision == "auto":
        return on_gpu() and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def deepspeed_config(base_json: str | None, zero_stage: int, micro_batch: int, grad_accum: int, grad_clip: float,
                     bf16: bool) -> dict:
    """Our values fill a DeepSpeed JSON (official zero2/zero3 files use "auto" for exactly these)."""
    config = json.loads(resolve_deepspeed_json(base_json).read_text()) if base_json else {}
    config.setdefault("zero_optimization", {})["stage"] = zero_stage
    config.update(train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=grad_accum,
                  gradient_clipping=grad_clip, zero_allow_untested_optimizer=True,
                  zero_force_ds_cpu_optimizer=False, steps_per_print=10**9, wall_clock_breakdown=False)
    config.pop("train_batch_size", None)
    config["bf16"] = {"enabled": bf16}
    config["fp16"] = {"enabled": False}  # FG-CLIP's README: fp16 gives NaN gradients
    return config
