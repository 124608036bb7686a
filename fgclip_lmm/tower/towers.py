"""The tower types and their registry: `fgclip`, `fgclip2`, `clip`, `siglip`, `hf` (any transformers vision model).

Dispatch is on an explicit type key kept apart from the weights path (never on name substrings or on whether a
path exists, the classic LLaVA pitfall that loads a local SigLIP directory as CLIP). Every type wraps a stock
transformers class, so the tower drops into `LlavaForConditionalGeneration` without remote code:

| type     | wrapped model                                              | CLS | default processor          |
|----------|------------------------------------------------------------|-----|----------------------------|
| `fgclip` | `CLIPVisionModel` from `load_clip_vision_model` (ours, official, OpenAI CLIP) | yes | CLIP resize+crop |
| `clip`   | `CLIPVisionModel.from_pretrained` (a vision-only or full `CLIPModel` checkpoint) | yes | CLIP resize+crop |
| `fgclip2` | FG-CLIP 2's NaFlex tower as a fixed-grid `SiglipVisionModel` (`fixed_grid.py`) | no | SigLIP squash |
| `siglip` | `SiglipVisionModel.from_pretrained`                        | no  | SigLIP squash, mean/std 0.5 |
| `hf`     | `AutoModel.from_pretrained` of a vision-only checkpoint    | inferred (0 or 1 extra token) | its own |

Missing weights are an error (a silently re-initialised tower: docs/llava.md,
"Pitfalls and what this project does", row 13).
"""
from __future__ import annotations

from typing import Any

from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.image_utils import PILImageResampling

from fgclip_lmm.errors import CheckpointError, InputError

from .base import TowerConfig, VisionTower


def _vision_config_dict(path: str) -> dict:
    """The vision part of `config.json`: `vision_config` of a dual-encoder config, else the config itself."""
    config, _ = PretrainedConfig.get_config_dict(path)
    return dict(config.get("vision_config", config))


def _from_pretrained_strict(cls: Any, path: str) -> nn.Module:
    model, info = cls.from_pretrained(path, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"{cls.__name__}.from_pretrained({path!r}) left weights uninitialised: "
                              f"{sorted(missing)[:8]}")
    return model.eval()


def _saved_image_processor(path: str) -> Any | None:
    """The checkpoint's own image processor, or None when it ships without one."""
    try:
        return AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError):
        return None


class CLIPTower(VisionTower):
    type_name = "clip"
    family_has_cls = True

    def _load_vision_model(self, path: str) -> nn.Module:
        return _from_pretrained_strict(CLIPVisionModel, path)

    def _load_config(self, path: str) -> Any:
        return CLIPVisionConfig.from_dict(_vision_config_dict(path))

    def _load_image_processor(self, path: str, config: Any) -> Any:
        size = int(config.image_size)
        return _saved_image_processor(path) or CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )


class FGCLIPTower(CLIPTower):
    """FG-CLIP's vision side is a plain `CLIPVisionModel`; the model core knows the checkpoint formats."""

    type_name = "fgclip"

    def _load_vision_model(self, path: str) -> nn.Module:
        from fgclip_lmm.model import load_clip_vision_model

        return load_clip_vision_model(path)


class SiglipTower(VisionTower):
    type_name = "siglip"
    family_has_cls = False

    def _load_vision_model(self, path: str) -> nn.Module:
        return _from_pretrained_strict(SiglipVisionModel, path)

    def _load_config(self, path: str) -> Any:
        return SiglipVisionConfig.from_dict(_vision_config_dict(path))

    def _load_image_processor(self, path: str, config: Any) -> Any:
        size = int(config.image_size)
        return _saved_image_processor(path) or SiglipImageProcessor(size={"height": size, "width": size})


class FGCLIP2Tower(SiglipTower):
    """FG-CLIP 2 as a fixed-resolution SigLIP tower: stock LLaVA passes no NaFlex mask or grid, so the NaFlex tower
    is converted once, at `TowerConfig.image_size` (default: the learned position grid, 256 px for B/16)."""

    type_name = "fgclip2"
    chooses_image_size = True

    def _load_vision_model(self, path: str) -> nn.Module:
        from fgclip_lmm.model import FGCLIP2Model
        from fgclip_lmm.model.fixed_grid import fgclip2_vision_as_siglip

        return fgclip2_vision_as_siglip(FGCLIP2Model.from_pretrained(path), self.cfg.image_size)

    def _load_config(self, path: str) -> Any:
        from fgclip_lmm.model.fixed_grid import fgclip2_config_of, siglip_vision_config

        return siglip_vision_config(fgclip2_config_of(path), self.cfg.image_size)

    def _load_image_processor(self, path: str, config: Any) -> Any:
        # The checkpoint's own processor is the NaFlex one; the fixed grid takes a squashed square image, resized
        # bilinearly as the NaFlex processor does.
        size = int(config.image_size)
        return SiglipImageProcessor(size={"height": size, "width": size}, resample=PILImageResampling.BILINEAR)


class HFTower(VisionTower):
    """Any transformers vision model with `image_size`/`patch_size` in its config and `hidden_states` outputs."""

    type_name = "hf"

    def _load_vision_model(self, path: str) -> nn.Module:
        model = _from_pretrained_strict(AutoModel, path)
        for attr in ("hidden_size", "image_size", "patch_size", "num_hidden_layers"):
            if not isinstance(getattr(model.config, attr, None), int):
                raise CheckpointError(f"hf tower {path!r}: config.{attr} must be an int, "
                                      f"got {getattr(model.config, attr, None)!r}")
        return model

    def _load_config(self, path: str) -> Any:
        return AutoConfig.from_pretrained(path)

    def _load_image_processor(self, path: str, config: Any) -> Any:
        processor = _saved_image_processor(path)
        if processor is None:
            raise CheckpointError(f"hf tower {path!r} has no preprocessor_config.json; save its image processor there")
        return processor


TOWERS: dict[str, type[VisionTower]] = {"fgclip": FGCLIPTower, "fgclip2": FGCLIP2Tower, "clip": CLIPTower,
                                        "siglip": SiglipTower, "hf": HFTower}


def tower_class(tower_type: str) -> type[VisionTower]:
    if tower_type not in TOWERS:
        raise InputError(f"unknown tower type {tower_type!r}; known: {', '.join(sorted(TOWERS))}")
    return TOWERS[tower_type]


def build_tower(cfg: TowerConfig) -> VisionTower:
    """Build (and, unless `cfg.delay_load`, load) the tower of type `cfg.type`."""
    return tower_class(cfg.type)(cfg)


def parse_tower_spec(spec: str) -> tuple[str, str]:
    """`"TYPE:PATH"` -> (type, path); the type must be a registry key, the path may itself contain ':'."""
    tower_type, sep, path = spec.partition(":")
    if not sep or not path:
        raise InputError(f"tower spec {spec!r} must be TYPE:PATH with TYPE in {', '.join(sorted(TOWERS))}")
    tower_class(tower_type)
    return tower_type, path


def tower_from_llava_args(vision_tower: str, args: Any, delay_load: bool = False) -> VisionTower:
    """Build a tower with original LLaVA's constructor signature (`CLIPVisionTower(vision_tower, args, delay_load)`).

    `vision_tower` is `TYPE:PATH`; `args` supplies `mm_vision_select_layer` (default -2) and
    `mm_vision_select_feature` (default `patch`). LLaVA freezes towers in `load_model`, so tuning is `frozen`
    unless `args.unfreeze_mm_vision_tower` is set (then `full`, and the weights load at once as in LLaVA).
    """
    tower_type, path = parse_tower_spec(vision_tower)
    unfreeze = bool(getattr(args, "unfreeze_mm_vision_tower", False))
    cfg = TowerConfig(
        type=tower_type,
        path=path,
        feature_layer=int(getattr(args, "mm_vision_select_layer", -2)),
        select=str(getattr(args, "mm_vision_select_feature", "patch")),
        tuning="full" if unfreeze else "frozen",
        delay_load=delay_load and not unfreeze,
    )
    return build_tower(cfg)
