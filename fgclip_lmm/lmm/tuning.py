"""What trains in an HF LLaVA model: per-component tuning (`llm`, `tower`: frozen | full | lora; `projector`:
frozen | full) applied with one peft LoRA config over the whole `LlavaForConditionalGeneration`.

Rules: a frozen tower gets `requires_grad=False` *and* runs under `torch.no_grad` (forward hooks on
`model.model.vision_tower`, so HF's own `get_image_features` call is covered too); LoRA targets are the linear
leaves of the LLM's decoder layers and/or the tower's encoder layers, matched by a regex anchored at
`model.language_model.` / `model.vision_tower.` so the projector and `lm_head` can never be caught by accident;
after peft wraps the model (which freezes everything else) the fully-trained components are unfrozen again.
Stages: `align` = `LmmTuning(llm="frozen", projector="full")`; `finetune` = `LmmTuning(llm="full" | "lora")`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from fgclip_lmm.tower import TUNING_MODES, LmmLoraConfig, set_no_grad_forward

PROJECTOR_MODES = ("frozen", "full")
COMPONENT_PREFIXES = {
    "llm": "model.language_model.",
    "tower": "model.vision_tower.",
    "projector": "model.multi_modal_projector.",
}


@dataclass
class LmmTuning:
    llm: str = "full"
    tower: str = "frozen"
    projector: str = "full"
    lora: LmmLoraConfig = field(default_factory=LmmLoraConfig)

    def __post_init__(self) -> None:
        for name in ("llm", "tower"):
            if getattr(self, name) not in TUNING_MODES:
                raise ValueError(f"LmmTuning.{name}={getattr(self, name)!r}; known: {', '.join(TUNING_MODES)}")
        if self.projector not in PROJECTOR_MODES:
            raise ValueError(f"LmmTuning.projector={self.projector!r}; known: {', '.join(PROJECTOR_MODES)}")

    @property
    def uses_lora(self) -> bool:
        return "lora" in (self.llm, self.tower)


def unwrap_llava(model: nn.Module) -> nn.Module:
    """The `LlavaForConditionalGeneration` inside peft / DDP / DeepSpeed wrappers (or the model itself)."""
    from peft import PeftModel

    inner = model
    while True:
        if isinstance(inner, PeftModel):
            inner = inner.get_base_model()
        elif isinstance(getattr(inner, "module", None), nn.Module):  # DistributedDataParallel, DeepSpeedEngine
            inner = inner.module
        else:
            return inner


def component_of(name: str) -> str:
    """`llm`, `tower`, `projector` or `lm_head` for a parameter name of (an unwrapped) LLaVA model."""
    name = name.removeprefix("base_model.model.")
    for component, prefix in COMPONENT_PREFIXES.items():
        if name.startswith(prefix):
            return component
    return "lm_head" if name.startswith("lm_head.") else "other"


def lora_target_regex(model: nn.Module, llm: bool = True, tower: bool = False) -> str:
    """A peft `target_modules` regex for the linear leaves of the chosen components (never projector / lm_head)."""
    alternatives = []
    for wanted, key in ((llm, "llm"), (tower, "tower")):
        if not wanted:
            continue
        prefix = COMPONENT_PREFIXES[key]
        leaves = sorted({n.rsplit(".", 1)[-1] for n,
                         m in model.named_modules() if n.startswith(prefix) and isinstance(m, nn.Linear)})
        if not leaves:
            raise ValueError(f"no nn.Linear under {prefix!r} to put LoRA adapters on")
        alternatives.append(f"{re.escape(prefix)}(?:.*\\.)?(?:{'|'.join(map(re.escape, leaves))})")
    if not alternatives:
        raise ValueError("lora_target_regex needs llm=True and/or tower=True")
    return "^(?:" + "|".join(alternatives) + ")$"


def apply_tuning(model: nn.Module, tuning: LmmTuning) -> nn.Module:
    """Set `requires_grad` per component, the tower's no-grad mode, and wrap with peft LoRA when asked.

    Returns the model to train: `model` itself, or a `peft.PeftModel` around it when `tuning.uses_lora`.
    """
    llava = unwrap_llava(model)
    llava.requires_grad_(False)
    wrapped: nn.Module = llava
    if tuning.uses_lora:
        from peft import LoraConfig, get_peft_model

        spec = tuning.lora
        config = LoraConfig(
            r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, bias="none",
            target_modules=lora_target_regex(llava, llm=tuning.llm == "lora", tower=tuning.tower == "lora"),
        )
        wrapped = get_peft_model(llava, config)
    full = {"llm": tuning.llm == "full", "tower": tuning.tower == "full", "projector": tuning.projector == "full",
            "lm_head": tuning.llm == "full"}
    for name, param in llava.named_parameters():
        if "lora_" in name:
            continue
        param.requires_grad_(full.get(component_of(name), False))
    set_no_grad_forward(llava.model.vision_tower, tuning.tower == "frozen")
    return wrapped


def trainable_summary(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{component: (trainable, total)} parameter counts; ZeRO-3-partitioned parameters count via `ds_numel`."""
    out: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        numel = int(getattr(param, "ds_numel", param.numel()))
        key = component_of(name)
        if "lora_" in name:
            key += "_lora"
        entry = out.setdefault(key, [0, 0])
        entry[1] += numel
        if param.requires_grad:
            entry[0] += numel
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}
