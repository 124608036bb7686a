"""Box validation and RoIAlign box features on the dense feature grid.

Boxes are normalised xyxy in [0, 1] everywhere in this project. The official
`get_image_box_roi_features` takes feature-grid units instead; we reject values outside [0, 1] so a call written
for the official method fails loudly instead of silently sampling the wrong region.
"""
from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align


def validate_boxes(boxes: torch.Tensor, field: str = "boxes") -> None:
    """Raise ValueError naming the first bad row of a (K, 4) normalised xyxy tensor."""
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{field}: expected shape (K, 4) of normalised xyxy, got {tuple(boxes.shape)}")
    if boxes.numel() == 0:
        return
    x1, y1, x2, y2 = boxes.unbind(-1)
    problems = (
        (~torch.isfinite(boxes).all(-1), "is not finite"),
        (((boxes < 0) | (boxes > 1)).any(-1), "is outside [0, 1] (boxes are normalised xyxy, not grid or pixel units)"),
        (x1 > x2, "has x1 > x2"),
        (y1 > y2, "has y1 > y2"),
        ((x2 - x1) * (y2 - y1) <= 0, "has zero area"),
    )
    for bad, why in problems:
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"{field}[{i}] = {boxes[i].tolist()} {why}")


def boxes_to_rois(box_info: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Accept a list of per-image (n_i, 4) tensors or a (K, 5) [batch_idx, x1, y1, x2, y2] tensor; return (K, 5)."""
    if isinstance(box_info, (list, tuple)):
        for i, b in enumerate(box_info):
            validate_boxes(b, field=f"box_info[{i}]")
        idx = torch.cat([torch.full((len(b),), i, dtype=torch.float32) for i, b in enumerate(box_info)])
        coords = torch.cat([b.float() for b in box_info]) if box_info else torch.zeros(0, 4)
        return torch.cat([idx.to(coords.device).unsqueeze(1), coords], dim=1)
    if box_info.ndim != 2 or box_info.shape[-1] != 5:
        raise ValueError(f"box_info: expected a list of (n, 4) tensors or a (K, 5) tensor, got {tuple(box_info.shape)}")
    validate_boxes(box_info[:, 1:], field="box_info[:, 1:]")
    return box_info.float()


def packed_rois(boxes: torch.Tensor, box_counts: torch.Tensor) -> torch.Tensor:
    """(K, 4) boxes packed in image order + (B,) counts -> (K, 5) rois, without a Python loop over images."""
    validate_boxes(boxes)
    if int(box_counts.sum()) != boxes.shape[0]:
        raise ValueError(f"box_counts sum to {int(box_counts.sum())} but {boxes.shape[0]} boxes were given")
    idx = torch.repeat_interleave(torch.arange(len(box_counts), device=boxes.device), box_counts.to(boxes.device))
    return torch.cat([idx.unsqueeze(1).float(), boxes.float()], dim=1)


def roi_features(dense: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Bilinear box average of (B, N, P) dense features at (K, 5) normalised rois -> (K, P).

    RoIAlign as in the official code: output 1x1, aligned=True, adaptive sampling, on the sqrt(N) x sqrt(N) grid.
    Computed in float32 (the official hard-coded bf16 cast breaks fp32 runs) and returned in the input dtype.
    """
    b, n, p = dense.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"dense features have {n} patches, not a square grid")
    fmap = dense.float().transpose(1, 2).reshape(b, p, side, side)
    scaled = rois.float().to(dense.device) * torch.tensor([1.0, side, side, side, side], device=dense.device)
    out = roi_align(fmap, scaled, output_size=(1, 1), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out[:, :, 0, 0].to(dense.dtype)
