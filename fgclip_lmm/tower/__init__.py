"""Swappable vision towers for LLaVA-style LMMs: `build_tower(TowerConfig(type=..., path=...))`.

Tower types (exact registry keys): `fgclip`, `fgclip2`, `clip`, `siglip`, `hf`. Each wraps a stock transformers vision
model (`fgclip2`: FG-CLIP 2's NaFlex tower converted to a fixed-grid `SiglipVisionModel`),
so an assembled LMM is a plain `LlavaForConditionalGeneration` (see `fgclip_lmm.lmm.assemble`).

Dropping a tower into original LLaVA / LLaVA-NeXT
-------------------------------------------------
The towers expose the names LLaVA's `CLIPVisionTower` has (`load_model`, `is_loaded`, `feature_select`,
`dummy_feature`, `config`, `hidden_size`, `num_patches`, `num_patches_per_side`, `image_processor`, `dtype`,
`device`, `vision_tower_name`, `select_layer`, `select_feature`, `delay_load`) and accept the same constructor
arguments through `tower_from_llava_args`. The one change to make in
`llava/model/multimodal_encoder/builder.py` (both repos) is a branch at the *top* of `build_vision_tower`, before
the `os.path.exists` test that would otherwise load any local directory as CLIP:

    from fgclip_lmm.tower import TOWERS, tower_from_llava_args

    def build_vision_tower(vision_tower_cfg, **kwargs):
        vision_tower = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
        if vision_tower.split(":", 1)[0] in TOWERS:          # e.g. --vision_tower fgclip:/ckpt/fgclip-base
            return tower_from_llava_args(vision_tower, args=vision_tower_cfg, **kwargs)
        ...  # the original chain, unchanged

`--mm_vision_select_layer` and `--mm_vision_select_feature` keep their meaning. Two behavioural differences from
LLaVA's CLIP tower: a frozen tower runs under `torch.no_grad` through forward hooks on the wrapped model (so it
also holds when HF code calls the model directly), and `unfreeze_mm_vision_tower` maps to tuning `full`, which
removes both the freeze and the `no_grad`. LLaVA-NeXT's `mm_tunable_parts` works unchanged, since it only toggles
`requires_grad`; use tuning `full` there so the `no_grad` hooks are not installed.
"""
from .base import (
    SELECT_STRATEGIES,
    TOWER_LORA_TARGETS,
    TUNING_MODES,
    LmmLoraConfig,
    TowerConfig,
    VisionTower,
    runs_without_grad,
    set_no_grad_forward,
)
from .blocks import (
    LeadingBlocks,
    hidden_state_index,
    llava_image_features,
    prepare_llava_tower,
    run_all_blocks,
    run_needed_blocks,
)
from .towers import (
    TOWERS,
    CLIPTower,
    FGCLIP2Tower,
    FGCLIPTower,
    HFTower,
    SiglipTower,
    build_tower,
    parse_tower_spec,
    tower_class,
    tower_from_llava_args,
)

__all__ = [
    "SELECT_STRATEGIES",
    "TOWERS",
    "TOWER_LORA_TARGETS",
    "TUNING_MODES",
    "CLIPTower",
    "FGCLIP2Tower",
    "FGCLIPTower",
    "HFTower",
    "LeadingBlocks",
    "LmmLoraConfig",
    "SiglipTower",
    "TowerConfig",
    "VisionTower",
    "build_tower",
    "hidden_state_index",
    "llava_image_features",
    "parse_tower_spec",
    "prepare_llava_tower",
    "run_all_blocks",
    "run_needed_blocks",
    "runs_without_grad",
    "set_no_grad_forward",
    "tower_class",
    "tower_from_llava_args",
]
