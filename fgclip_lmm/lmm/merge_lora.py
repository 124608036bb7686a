"""`fgclip-lmm merge-lora --base DIR --adapter DIR --out DIR`: a LoRA run -> one full stock HF LLaVA checkpoint.

Loads the base `LlavaForConditionalGeneration` in float32 (merging in low precision degrades the weights),
copies `non_lora_trainables.safetensors` into it (every key must exist in the base with the same shape, or the
merge stops naming the key), applies the peft adapter with `merge_and_unload`, casts to `--dtype` (default: the
base's dtype) and writes it with `export.save_full`. The processor comes from the adapter directory when it
holds one (it was saved at training time), else from the base.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

from fgclip_lmm.devices import DTYPES
from fgclip_lmm.errors import CheckpointError, InputError, checkpoint_errors

from .assemble import META_FILE
from .export import NON_LORA_FILE, save_full


def load_non_lora(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy the tensors of `path` into `model` by name (strict on names and shapes); return the names."""
    state = load_file(str(path))
    params = dict(model.state_dict())
    for key, value in state.items():
        if key not in params:
            raise CheckpointError(f"{path}: {key!r} is not a parameter of the base model")
        if params[key].shape != value.shape:
            raise CheckpointError(f"{path}: {key!r} has shape {tuple(value.shape)}, "
                                  f"the base has {tuple(params[key].shape)}")
    with torch.no_grad():
        for key, value in state.items():
            params[key].copy_(value.to(params[key].dtype))
    return sorted(state)


def merge_lora(base: str | Path, adapter: str | Path, out: str | Path, dtype: str = "auto") -> Path:
    from peft import PeftModel

    if dtype != "auto" and dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r}; known: auto, {', '.join(DTYPES)}")
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{str(adapter)!r} has no adapter_config.json: not a LoRA directory written by "
                                "save_lora")
    with checkpoint_errors(base):
        model = LlavaForConditionalGeneration.from_pretrained(str(base), dtype=torch.float32)
        target_dtype = DTYPES[dtype] if dtype != "auto" else AutoConfig.from_pretrained(str(base)).dtype
    with checkpoint_errors(adapter):
        if (adapter / NON_LORA_FILE).is_file():
            load_non_lora(model, adapter / NON_LORA_FILE)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if isinstance(target_dtype, str):
        target_dtype = getattr(torch, target_dtype)
    merged = merged.to(target_dtype or torch.float32)
    source = adapter if (adapter / "processor_config.json").is_file() else Path(base)
    processor = AutoProcessor.from_pretrained(str(source))
    out = save_full(merged, processor, out)
    meta_src = next((d / META_FILE for d in (adapter, Path(base)) if (d / META_FILE).is_file()), None)
    if meta_src is not None:
        shutil.copyfile(meta_src, Path(out) / META_FILE)
    return Path(out)
