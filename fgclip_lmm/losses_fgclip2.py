"""FG-CLIP 2 stage-2 losses as modules (docs/fgclip2.md, "Losses"), open_clip style: explicit rank / world-size knobs,
named terms, float32 arithmetic whatever the model dtype, and no silent fallback.

- `SigmoidGlobalLoss`: SigLIP's -sum logsigmoid(z * (s I.T + b)) / B of local images against the texts of every
  rank (the other ranks' texts are negatives). Texts are gathered with gradient, which is what the official ring of
  differentiable all-reduces computes, in one collective.
- `RegionContrastiveLoss`: symmetric InfoNCE between valid box features and their phrases (`logit_scale_finegraind`).
- `TextIntraContrastiveLoss` (TIC): S = T T^T, diagonal and near duplicates (> 0.95) zeroed, mean over rows of the
  logsumexp of the row's top-10. Explicit rule for K < 10 valid boxes (the official `topk` raises there and its bare
  `except` silently drops every region and hard term): the row is padded with zero similarities up to 10 entries, the
  value the official gives the diagonal and near duplicates, so the term keeps its scale (log 10 at orthogonal
  phrases) and one box is a constant log 10 with zero gradient. No box: an exact 0 kept in the graph.
- `HardNegativeLoss`: per box one positive G and N negatives D: itc, pair and the cross-modal rank term (CMR) with
  the margin `cmr_threshold`, a float32 buffer (saved in checkpoints, so a resumed run continues exactly). After each
  training forward it becomes clamp(all_reduce_mean(mean s<R,G> - mean nonzero s<R,D>), 0, max), all-reduced on the
  buffer's device with the default process group's backend (gloo on CPU, nccl on GPU); the first step uses 0.
- `FGCLIP2Loss`: long + short + w_r region + w_t TIC + w_h (0.6 itc + 3 pair + 0.4 cmr).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .losses import _resolve_world, gather_with_grad


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """An exact 0 that keeps every input in the graph (DeepSpeed expects a gradient slot for every parameter)."""
    return sum(t.float().sum() * 0.0 for t in tensors)


class SigmoidGlobalLoss(nn.Module):
    """SigLIP sigmoid loss of the local images against the gathered texts; targets rank*B + arange(B)."""

    def __init__(self, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
        rank, world = _resolve_world(self.rank, self.world_size)
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        all_text = gather_with_grad(text, world)
        b = image.shape[0]
        logits = logit_scale.float().exp() * image @ all_text.T + logit_bias.float()
        labels = -torch.ones_like(logits)
        labels[torch.arange(b, device=logits.device), torch.arange(b, device=logits.device) + rank * b] = 1.0
        return -F.logsigmoid(labels * logits).sum() / b


class RegionContrastiveLoss(nn.Module):
    """1/2 [CE(s R T^T, eye) + CE(s T R^T, eye)] over the K valid boxes."""

    def forward(self, region: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        if region.shape[0] == 0:
            return _zero(region, text, logit_scale)
        region, text = F.normalize(region.float(), dim=-1), F.normalize(text.float(), dim=-1)
        logits = logit_scale.float().exp() * region @ text.T
        target = torch.arange(region.shape[0], device=region.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class TextIntraContrastiveLoss(nn.Module):
    """TIC over the K phrase features; see the module docstring for the rule below `top_k` phrases."""

    def __init__(self, top_k: int = 10, max_similarity: float = 0.95):
        super().__init__()
        self.top_k, self.max_similarity = top_k, max_similarity

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        k = text.shape[0]
        if k == 0:
            return _zero(text)
        text = F.normalize(text.float(), dim=-1)
        sim = (text @ text.T).masked_fill(torch.eye(k, dtype=torch.bool, device=text.device), 0.0)
        sim = sim.masked_fill(sim > self.max_similarity, 0.0)
        if k < self.top_k:
            sim = F.pad(sim, (0, self.top_k - k))  # zero similarities up to top_k entries per row
        values = sim.topk(self.top_k, dim=1).values
        return torch.logsumexp(values, dim=1).mean()


class HardNegativeLoss(nn.Module):
    """itc / pair / CMR terms of M boxes against their (1 + N) phrases, positive first; owns the CMR margin."""

    def __init__(self, itc_weight: float = 0.6, pair_weight: float = 3.0, cmr_weight: float = 0.4,
                 threshold_max: float = 10.0, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.itc_weight, self.pair_weight, self.cmr_weight = itc_weight, pair_weight, cmr_weight
        self.threshold_max, self.rank, self.world_size = threshold_max, rank, world_size
        self.register_buffer("cmr_threshold", torch.zeros((), dtype=torch.float32))

    def _apply(self, fn, recurse=True):
        # A bf16 engine casts every floating buffer; the margin stays float32 so checkpoints keep it exactly.
        super()._apply(fn, recurse)
        self._buffers["cmr_threshold"] = self._buffers["cmr_threshold"].float()
        return self

    def forward(self, region: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                update_threshold: bool = False) -> dict[str, torch.Tensor]:
        """`region` (M, D), `text` (M, 1 + N, D). Returns hard_itc, hard_pair, hard_cmr and their total hard_neg."""
        m = region.shape[0]
        if text.ndim != 3 or text.shape[0] != m or text.shape[1] < 2:
            raise ValueError(f"hard-negative text must be (M={m}, 1 + N >= 2, D); got {tuple(text.shape)}")
        if m == 0:
            zero = _zero(region, text, logit_scale)
            terms = {"hard_itc": zero, "hard_pair": zero, "hard_cmr": zero, "hard_neg": zero}
            local = self.cmr_threshold.clone()
        else:
            s = logit_scale.float().exp()
            region, text = F.normalize(region.float(), dim=-1), F.normalize(text.float(), dim=-1)
            positive, negative = text[:, 0], text[:, 1:]
            target = torch.arange(m, device=region.device)
            image_logits = s * region @ torch.cat([positive, negative.reshape(-1, positive.shape[-1])]).T
            itc = 0.5 * (F.cross_entropy(image_logits, target) + F.cross_entropy(s * positive @ region.T, target))
            pair_logits = s * torch.einsum("md,mjd->mj", region, text)
            pair = F.cross_entropy(pair_logits, torch.zeros_like(target))
            gt, da = pair_logits[:, :1], pair_logits[:, 1:]
            cmr = F.relu(self.cmr_threshold + da - gt).mean()
            total = self.itc_weight * itc + self.pair_weight * pair + self.cmr_weight * cmr
            terms = {"hard_itc": itc, "hard_pair": pair, "hard_cmr": cmr, "hard_neg": total}
            nonzero = da.detach() != 0
            local = gt.detach().mean() - (da.detach() * nonzero).sum() / nonzero.sum().clamp(min=1)
        if update_threshold:
            self._update_threshold(local)
        return terms

    @torch.no_grad()
    def _update_threshold(self, local: torch.Tensor) -> None:
        """thr <- clamp(mean over ranks of the local estimates, 0, max); every rank must call this each step."""
        _, world = _resolve_world(self.rank, self.world_size)
        value = local.detach().float().reshape(1).to(self.cmr_threshold.device).clone()
        if world > 1:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value = value / world
        self.cmr_threshold.copy_(value.clamp(0.0, self.threshold_max)[0])


class FGCLIP2Loss(nn.Module):
    """The whole stage-2 objective; returns every named term plus the weighted `loss`."""

    def __init__(self, region_weight: float = 0.2, region_text_weight: float = 0.1, hard_weight: float = 0.5,
                 hard_itc_weight: float = 0.6, hard_pair_weight: float = 3.0, hard_cmr_weight: float = 0.4,
                 tic_top_k: int = 10, tic_max_similarity: float = 0.95, cmr_threshold_max: float = 10.0,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.region_weight, self.region_text_weight, self.hard_weight = region_weight, region_text_weight, hard_weight
        self.global_loss = SigmoidGlobalLoss(rank, world_size)
        self.region_loss = RegionContrastiveLoss()
        self.region_text_loss = TextIntraContrastiveLoss(tic_top_k, tic_max_similarity)
        self.hard_loss = HardNegativeLoss(hard_itc_weight, hard_pair_weight, hard_cmr_weight, cmr_threshold_max,
                                          rank, world_size)

    @classmethod
    def from_config(cls, config, rank: int | None = None, world_size: int | None = None) -> FGCLIP2Loss:
        return cls(config.region_loss_weight, config.region_text_loss_weight, config.hard_loss_weight,
                   config.hard_itc_weight, config.hard_pair_weight, config.hard_cmr_weight, config.tic_top_k,
                   config.tic_max_similarity, config.cmr_threshold_max, rank, world_size)

    @property
    def cmr_threshold(self) -> torch.Tensor:
        return self.hard_loss.cmr_threshold

    def forward(self, image, long_text, short_text, logit_scale, logit_bias, region=None, region_text=None,
                region_scale=None, hard_region=None, hard_text=None, hard_scale=None,
                update_threshold: bool = False) -> dict[str, torch.Tensor]:
        terms = {"global_long": self.global_loss(image, long_text, logit_scale, logit_bias),
                 "global_short": self.global_loss(image, short_text, logit_scale, logit_bias)}
        loss = terms["global_long"] + terms["global_short"]
        if region is not None:
            terms["region"] = self.region_loss(region, region_text, region_scale)
            terms["region_text"] = self.region_text_loss(region_text)
            loss = loss + self.region_weight * terms["region"] + self.region_text_weight * terms["region_text"]
        if hard_region is not None:
            terms.update(self.hard_loss(hard_region, hard_text, hard_scale, update_threshold))
            loss = loss + self.hard_weight * terms["hard_neg"]
        terms["loss"] = loss
        return terms

