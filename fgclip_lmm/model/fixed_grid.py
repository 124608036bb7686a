"""FG-CLIP 2's NaFlex vision tower as a fixed-resolution stock `SiglipVisionModel` (for LLaVA export).

Stock `LlavaForConditionalGeneration` calls its tower with `pixel_values` only (no `pixel_attention_mask`, no
`spatial_shapes`), and servers that accept SigLIP towers expect the fixed-grid SigLIP layout. At a square grid of
g x g patches with no padding, the NaFlex tower is exactly a SigLIP tower with:
- `patch_embedding` as `Conv2d(3, D, p, stride=p)`: the NaFlex `Linear` reads each patch flattened in (py, px, c)
  order, so the conv kernel is its weight reshaped to (D, p, p, 3) and permuted to (D, 3, p, p);
- a g*g-row position table: the learned side x side table resized once to (g, g) by transformers' own NaFlex resize
  (`Siglip2VisionEmbeddings.resize_positional_embeddings`, bilinear with antialias in float32), i.e. the very
  values the NaFlex tower adds for a g x g image;
- the same encoder and `post_layernorm`. The MAP head is dropped (`vision_use_head=False`): LLaVA reads a hidden
  state, and an unused head would hold parameters without gradients in a tuned tower.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.models.siglip2.modeling_siglip2 import Siglip2VisionEmbeddings

from fgclip_lmm.errors import InputError

from .configuration_fgclip2 import FGCLIP2Config
from .loading import read_config, resolve_checkpoint_dir

VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
               "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")


def default_image_size(config: FGCLIP2Config) -> int:
    """The grid of the learned position table (e.g. 16 x 16 patches -> 256 px at patch 16)."""
    vision = config.vision_config
    return round(vision.num_patches ** 0.5) * vision.patch_size


def siglip_vision_config(config: FGCLIP2Config, image_size: int | None = None) -> SiglipVisionConfig:
    """The fixed-grid `SiglipVisionConfig` of an FG-CLIP 2 model at `image_size` px (a multiple of the patch)."""
    vision = config.vision_config
    size = default_image_size(config) if image_size is None else int(image_size)
    if size <= 0 or size % vision.patch_size:
        raise InputError(f"image_size={size} must be a positive multiple of the patch size {vision.patch_size}")
    values = {key: getattr(vision, key) for key in VISION_KEYS}
    return SiglipVisionConfig(**values, image_size=size, vision_use_head=False)


def fgclip2_config_of(path: str | Path) -> FGCLIP2Config:
    """The `FGCLIP2Config` of any FG-CLIP 2 checkpoint format, read without loading weights."""
    from .loading_fgclip2 import config_from_foreign, fgclip2_kind

    directory = resolve_checkpoint_dir(path)
    raw = read_config(directory)
    kind = fgclip2_kind(raw)
    return FGCLIP2Config.from_pretrained(directory) if kind == "ours" else config_from_foreign(raw, kind)


@torch.no_grad()
def fgclip2_vision_as_siglip(model, image_size: int | None = None) -> SiglipVisionModel:
    """Convert `model.vision_model` (an `FGCLIP2Model`) to a `SiglipVisionModel` at a g x g grid; see the docstring."""
    config = siglip_vision_config(model.config, image_size)
    source = model.vision_model
    grid, patch = config.image_size // config.patch_size, config.patch_size
    out = SiglipVisionModel(config).to(source.embeddings.patch_embedding.weight.dtype).eval()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(("head.", "embeddings."))}
    linear = source.embeddings.patch_embedding
    hidden = linear.weight.shape[0]
    state["embeddings.patch_embedding.weight"] = linear.weight.reshape(hidden, patch, patch, -1).permute(0, 3, 1, 2)
    state["embeddings.patch_embedding.bias"] = linear.bias
    table = source.embeddings.position_embedding.weight
    side = source.embeddings.position_embedding_size
    resized = Siglip2VisionEmbeddings.resize_positional_embeddings(
        table.reshape(side, side, -1), torch.tensor([[grid, grid]], device=table.device), max_length=grid * grid)
    state["embeddings.position_embedding.weight"] = resized[0]
    missing, unexpected = out.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"fixed-grid conversion left missing keys {missing} / unexpected keys {unexpected}")
    return out


def patchify(pixel_values: torch.Tensor, patch_size: int) -> dict[str, torch.Tensor]:
    """(B, 3, H, W) images -> the NaFlex inputs of an unpadded (H/p, W/p) grid, patches in (py, px, c) order."""
    b, c, h, w = pixel_values.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}")
    gh, gw = h // patch_size, w // patch_size
    patches = pixel_values.reshape(b, c, gh, patch_size, gw, patch_size).permute(0, 2, 4, 3, 5, 1)
    return {"pixel_values": patches.reshape(b, gh * gw, patch_size * patch_size * c),
            "pixel_attention_mask": torch.ones(b, gh * gw, dtype=torch.long, device=pixel_values.device),
            "spatial_shapes": torch.tensor([[gh, gw]] * b, device=pixel_values.device)}
