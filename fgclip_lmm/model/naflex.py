"""NaFlex helpers for FG-CLIP 2: the patch budget rule, the image processor, and RoIAlign on variable grids.

Image processing is transformers' `Siglip2ImageProcessorPil` (PIL bilinear resize to the largest patch grid that
keeps the aspect ratio within `max_num_patches`, rescale, (x - 0.5) / 0.5, patchify in (py, px, c) order, zero-pad),
which is what the official `Fgclip2ImageProcessor` does. The one thing transformers lacks is the official
`dynamic_max_patches` budget (`budget_for`): the smallest of {128, 256, 576, 784, 1024} patches that holds the
image's native (H // p) * (W // p) grid, capped at 1024. For a batch the official collator takes the budget of the
batch's largest image (`batch_budget`), so every image of a batch is padded to the same length.

Boxes: each image's first h*w tokens form its (h, w) grid. To run one vectorised `roi_align` over a batch of
different grids, every grid is edge-replicated to the batch's (max h, max w); bilinear sampling at any point of a box
inside [0, w] x [0, h] then reads exactly what it reads on the unpadded grid (RoIAlign clamps at the last row and
column, and a replicated neighbour equals that clamp), so the result equals the official per-image loop.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.ops import roi_align
from transformers.models.siglip2.image_processing_pil_siglip2 import (
    Siglip2ImageProcessorPil,
)

PATCH_BUDGETS = (128, 256, 576, 784, 1024)


def budget_for(width: int, height: int, patch_size: int = 16, budgets: Sequence[int] = PATCH_BUDGETS) -> int:
    """Official `dynamic_max_patches`: the smallest budget >= the native patch count, else the largest budget."""
    native = (width // patch_size) * (height // patch_size)
    return next((b for b in sorted(budgets) if native <= b), max(budgets))


def batch_budget(images: Sequence[Image.Image], patch_size: int = 16, budgets: Sequence[int] = PATCH_BUDGETS) -> int:
    """The official training collator's budget: that of the batch's largest native grid."""
    if not images:
        raise ValueError("batch_budget needs at least one image")
    return max(budget_for(*image.size, patch_size=patch_size, budgets=budgets) for image in images)


def make_image_processor(patch_size: int = 16, max_num_patches: int = 256) -> Siglip2ImageProcessorPil:
    """transformers' PIL NaFlex processor with the official settings (bilinear, mean = std = 0.5)."""
    return Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=max_num_patches)


def naflex_batch(processor: Siglip2ImageProcessorPil, images: Sequence[Image.Image],
                 max_num_patches: int | str = "dynamic") -> dict[str, torch.Tensor]:
    """`pixel_values` (B, N, 3p^2), `pixel_attention_mask` (B, N), `spatial_shapes` (B, 2) for RGB PIL images.

    `max_num_patches="dynamic"` applies `batch_budget`; an int is used as is.
    """
    patch = int(processor.patch_size)
    budget = batch_budget(images, patch) if max_num_patches == "dynamic" else int(max_num_patches)
    out = processor(images=list(images), max_num_patches=budget, return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "pixel_attention_mask": out["pixel_attention_mask"].long(),
            "spatial_shapes": out["spatial_shapes"].long()}


def check_spatial_shapes(spatial_shapes: torch.Tensor, num_tokens: int) -> None:
    """Raise naming the first image whose (h, w) grid is empty or does not fit in the padded token count."""
    if spatial_shapes.ndim != 2 or spatial_shapes.shape[-1] != 2:
        raise ValueError(f"spatial_shapes must be (B, 2) = (h, w); got {tuple(spatial_shapes.shape)}")
    bad = (spatial_shapes <= 0).any(-1) | (spatial_shapes.prod(-1) > num_tokens)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"spatial_shapes[{i}] = {spatial_shapes[i].tolist()} is empty or has more than the "
                         f"{num_tokens} tokens of pixel_values")


def replicated_grids(dense: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens + (B, 2) grids -> (B, D, max h, max w), each grid edge-replicated past its own (h, w)."""
    check_spatial_shapes(spatial_shapes, dense.shape[1])
    shapes = spatial_shapes.to(dense.device).long()
    h, w = shapes[:, 0], shapes[:, 1]
    rows = torch.minimum(torch.arange(int(h.max()), device=dense.device)[None], h[:, None] - 1)
    cols = torch.minimum(torch.arange(int(w.max()), device=dense.device)[None], w[:, None] - 1)
    index = rows[:, :, None] * w[:, None, None] + cols[:, None, :]
    b, d = dense.shape[0], dense.shape[-1]
    flat = dense.gather(1, index.reshape(b, -1, 1).expand(-1, -1, d))
    return flat.reshape(b, index.shape[1], index.shape[2], d).permute(0, 3, 1, 2)


def naflex_roi_features(dense: torch.Tensor, spatial_shapes: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """RoIAlign 1x1 (aligned, adaptive sampling, float32) of (K, 5) normalised rois on each image's grid -> (K, D).

    Boxes are scaled by their own image's (w, h), the official training forward's unit; returned unnormalised in
    float32 (the official bf16 cast is what keeps a float32 model from training the box terms).
    """
    grids = replicated_grids(dense.float(), spatial_shapes)
    shapes = spatial_shapes.to(dense.device).float()
    rois = rois.float().to(dense.device)
    owner = rois[:, 0].long()
    h, w = shapes[owner, 0:1], shapes[owner, 1:2]
    scaled = torch.cat([rois[:, :1], rois[:, 1:2] * w, rois[:, 2:3] * h, rois[:, 3:4] * w, rois[:, 4:5] * h], 1)
    out = roi_align(grids, scaled, output_size=(1, 1), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out[:, :, 0, 0]
