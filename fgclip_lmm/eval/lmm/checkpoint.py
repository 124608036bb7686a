"""The checkpoint check shared by the plugin and `eval-lmm`'s preflight (no torch: it runs before any import)."""
from __future__ import annotations

import json
from pathlib import Path


def check_checkpoint(pretrained: str) -> None:
    """Fail early and clearly on a missing or non-LLaVA local checkpoint (hub ids are left to transformers)."""
    path = Path(pretrained).expanduser()
    looks_local = path.exists() or pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1
    if not looks_local:
        return
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {pretrained}")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{pretrained} has no config.json: not a Hugging Face checkpoint")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "llava":
        raise ValueError(f"{pretrained} has model_type={model_type!r}; fgclip_llava needs a 'llava' export")
