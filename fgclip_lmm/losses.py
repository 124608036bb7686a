"""FG-CLIP losses as modules with explicit rank / world-size knobs, each returning named terms.

- `GlobalContrastiveLoss`: symmetric InfoNCE of local rows against gathered columns (open_clip's
  "local loss + gather with grad"); targets rank*b + arange(b). A single process needs no process group.
- `RegionContrastiveLoss`: symmetric InfoNCE between valid box features and their phrases (rank-local).
- `HardNegativeLoss`: cross-entropy over positive-first groups of 1 + K phrases per box; an empty set is a zero
  term (the official code crashes there).
- `FGCLIPLoss`: L = L_long + L_short + w_region * L_region + w_hard * L_hard.
All features are L2-normalised here; scales are log-temperatures (exp() is applied here, with an optional clamp).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn


def _scale(log_scale: torch.Tensor, max_log: float | None) -> torch.Tensor:
    return (log_scale.clamp(max=max_log) if max_log is not None else log_scale).exp()


def _resolve_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Differentiable all-gather along dim 0; every rank must hold the same number of rows."""
    if world_size == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(f"global loss needs equal local batches on every rank; got {[int(s) for s in sizes]} "
                         "(use a sampler with drop_last so each rank gets the same count)")
    return torch.cat(dist_fn.all_gather(x), dim=0)


class GlobalContrastiveLoss(nn.Module):
    """Symmetric image<->text InfoNCE; local rows against the global batch."""

    def __init__(self, rank: int | None = None, world_size: int | None = None, logit_scale_max: float | None = None):
        super().__init__()
        self.rank, self.world_size, self.logit_scale_max = rank, world_size, logit_scale_max

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        rank, world = _resolve_world(self.rank, self.world_size)
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        all_image, all_text = gather_with_grad(image, world), gather_with_grad(text, world)
        s = _scale(logit_scale.float(), self.logit_scale_max)
        b = image.shape[0]
        target = torch.arange(b, device=image.device) + rank * b
        return 0.5 * (F.cross_entropy(s * image @ all_text.T, target) + F.cross_entropy(s * text @ all_image.T, target))


class RegionContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between K box features and their K phrases; other boxes are the negatives."""

    def __init__(self, logit_scale_max: float | None = None):
        super().__init__()
        self.logit_scale_max = logit_scale_max

    def forward(self, region: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        if region.shape[0] == 0:
            return logit_scale * 0.0 + region.sum() * 0.0
        region, text = F.normalize(region.float(), dim=-1), F.normalize(text.float(), dim=-1)
        logits = _scale(logit_scale.float(), self.logit_scale_max) * region @ text.T
        target = torch.arange(region.shape[0], device=region.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class HardNegativeLoss(nn.Module):
    """Cross-entropy of each box against its own (1 + K) phrases, positive first.

    `text` is (M, 1 + K, D). `valid` (M, 1 + K) optionally masks missing negatives; boxes without negatives are
    simply not in M (the collator packs only boxes that have them).
    """

    def __init__(self, logit_scale_max: float | None = None):
        super().__init__()
        self.logit_scale_max = logit_scale_max

    def forward(self, region: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        if region.shape[0] == 0:
            return logit_scale * 0.0 + region.sum() * 0.0 + text.sum() * 0.0
        region, text = F.normalize(region.float(), dim=-1), F.normalize(text.float(), dim=-1)
        logits = _scale(logit_scale.float(), self.logit_scale_max) * torch.einsum("md,mkd->mk", region, text)
        if valid is not None:
            logits = logits.masked_fill(~valid, float("-inf"))
        return F.cross_entropy(logits, torch.zeros(region.shape[0], dtype=torch.long, device=region.device))


class FGCLIPLoss(nn.Module):
    """The full FG-CLIP objective; returns a dict of named terms plus the weighted `loss`."""

    def __init__(self, region_weight: float = 0.1, hard_weight: float = 0.5, rank: int | None = None,
                 world_size: int | None = None, logit_scale_max: float | None = None):
        super().__init__()
        self.region_weight, self.hard_weight = region_weight, hard_weight
        self.global_loss = GlobalContrastiveLoss(rank, world_size, logit_scale_max)
        self.region_loss = RegionContrastiveLoss(logit_scale_max)
        self.hard_loss = HardNegativeLoss(logit_scale_max)

    def forward(self, image, long_text, short_text, logit_scale, region=None, region_text=None,
                region_scale=None, hard_region=None, hard_text=None, hard_scale=None) -> dict[str, torch.Tensor]:
        terms = {"global_long": self.global_loss(image, long_text, logit_scale),
                 "global_short": self.global_loss(image, short_text, logit_scale)}
        loss = terms["global_long"] + terms["global_short"]
        if region is not None:
            terms["region"] = self.region_loss(region, region_text, region_scale)
            loss = loss + self.region_weight * terms["region"]
        if hard_region is not None:
            terms["hard_neg"] = self.hard_loss(hard_region, hard_text, hard_scale)
            loss = loss + self.hard_weight * terms["hard_neg"]
        terms["loss"] = loss
        return terms
