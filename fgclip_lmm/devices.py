"""The one device and dtype helper for library code and commands (the trainers' DeepSpeed runtime keeps its own
rank-bound device in `fgclip_lmm.train.runtime`).

* `pick_device(name)`: `name` when given (`cpu`, `cuda`, `cuda:1`), else `cuda:$LOCAL_RANK` when CUDA is available
  (one GPU per rank under torchrun / accelerate; rank 0 in a single process), else the CPU.
* `torch_dtype(name, allow_auto)`: `float32 | bfloat16 | float16` (and `auto`, kept as the string transformers'
  `from_pretrained(dtype="auto")` takes, where allowed) -> the torch dtype; an unknown name lists the known ones.
"""
from __future__ import annotations

import os

import torch

from .constants import DTYPE_NAMES
from .errors import InputError

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def torch_dtype(name: str, allow_auto: bool = False) -> torch.dtype | str:
    if allow_auto and name == "auto":
        return "auto"
    if name not in DTYPES:
        known = (["auto"] if allow_auto else []) + list(DTYPES)
        raise InputError(f"unknown dtype {name!r}; known: {', '.join(known)}")
    return DTYPES[name]
