"""Saving trained LMMs in formats stock libraries load (no `fgclip_lmm` import needed to use them).

* `save_full(model, processor, out)`: a full HF LLaVA checkpoint, tuned tower included: `config.json`,
  `generation_config.json`, `model.safetensors` (sharded as `model-*.safetensors` + index when large), the
  processor files (`processor_config.json`, tokenizer files, `chat_template.jinja`) and `fgclip_lmm.json`.
  Loads with `LlavaForConditionalGeneration.from_pretrained(out)` + `AutoProcessor.from_pretrained(out)`.
* `save_lora(peft_model, processor, out)`: the peft adapter (`adapter_config.json`, `adapter_model.safetensors`)
  plus every trainable non-LoRA tensor (projector; the tower or embeddings when trained fully) in
  `non_lora_trainables.safetensors`, keyed by the base `LlavaForConditionalGeneration` parameter names, plus the
  processor files and `fgclip_lmm.json`. Stock use: load the base, `load_state_dict` the non-LoRA tensors
  (strict=False), then `PeftModel.from_pretrained(base, out)`; or `fgclip-lmm merge-lora` for a full checkpoint.
* `save_projector(model, path)`: the projector alone (`linear_1.*`, `linear_2.*`, safetensors), which
  `fgclip-lmm assemble --projector-weights` accepts for the same tower and LLM.

Under ZeRO-3, gather first (e.g. the engine's 16-bit consolidated state dict) and pass it as `state_dict`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .assemble import META_FILE, write_meta
from .tuning import unwrap_llava

NON_LORA_FILE = "non_lora_trainables.safetensors"
PEFT_PREFIX = "base_model.model."


def _is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_full(
    model: nn.Module, processor: Any, out: str | Path, meta: dict | None = None, state_dict: dict | None = None
) -> Path:
    """Write a stock HF LLaVA checkpoint. A peft-wrapped model must be merged first (`merge_peft`)."""
    if _is_peft(model):
        raise ValueError("save_full got a peft model: call merge_peft(model) first, or save the adapter with save_lora")
    llava = unwrap_llava(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text_config = llava.config.text_config  # training turns the KV cache off; a saved model must have it on
    use_cache = getattr(text_config, "use_cache", True)
    text_config.use_cache = True
    try:
        llava.save_pretrained(out, state_dict=state_dict)
    finally:
        text_config.use_cache = use_cache
    processor.save_pretrained(out)
    if meta is not None:
        write_meta(out, meta)
    return out


def merge_peft(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights (in place) and return the plain LLaVA model."""
    if not _is_peft(model):
        raise ValueError(f"merge_peft needs a peft PeftModel, got {type(model).__name__}")
    return model.merge_and_unload()


def non_lora_trainables(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable tensors that are not LoRA adapters, keyed by base LLaVA names (peft wrappers stripped)."""
    out = {}
    for name, param in model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            key = name.removeprefix(PEFT_PREFIX).replace(".modules_to_save.default.", ".")
            out[key] = param.detach().to("cpu").contiguous().clone()
    return out


def save_lora(peft_model: nn.Module, processor: Any, out: str | Path, meta: dict | None = None) -> Path:
    """Write the adapter, the non-LoRA trainables and the processor (see the module docstring)."""
    if not _is_peft(peft_model):
        raise ValueError(f"save_lora needs a peft PeftModel, got {type(peft_model).__name__}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    save_file(non_lora_trainables(peft_model), str(out / NON_LORA_FILE), metadata={"format": "pt"})
    processor.save_pretrained(out)
    if meta is not None:
        write_meta(out, meta)
    return out


def save_projector(model: nn.Module, path: str | Path) -> Path:
    """The HF projector's `linear_1.*` / `linear_2.*` tensors, with its activation in the file metadata."""
    llava = unwrap_llava(model)
    projector = llava.model.multi_modal_projector
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in projector.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"projector_hidden_act": llava.config.projector_hidden_act})
    return path


__all__ = ["META_FILE", "NON_LORA_FILE", "merge_peft", "non_lora_trainables", "save_full", "save_lora",
           "save_projector"]
