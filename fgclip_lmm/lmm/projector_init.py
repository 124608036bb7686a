"""Data-dependent projector initialisation for align (`train-lmm --projector_init match_text`).

Issue 15: a freshly assembled projector maps tower features to tokens ~12x louder than the LLM's text embeddings,
and align at a high lr drives it to a collapse (137x, mean cosine 0.97 to the mean image token). `match_text`
starts align from tokens on the text's scale instead, with three exact rewrites of the stock weights (the model
stays a stock `LlavaMultiModalProjector`: `linear_1 -> act -> linear_2`):

1. fold the per-dimension mean and standard deviation of the tower features (measured on a calibration batch)
   into `linear_1`, so `linear_1` sees standardised features: `W1' = W1 / sd`, `b1' = b1 - W1' mu`;
2. subtract the mean projected token from `linear_2`'s bias (image tokens start centred: nothing shared by all
   of them drowns what differs between them);
3. scale `linear_2` so the tokens' mean RMS norm equals that of the batch's text-token embeddings (the ratio
   `image_norm_ratio` of `fgclip_lmm.lmm.health` starts at 1).

Measured in benchmarks/bench_lmm_recipe.py against the stock init at the same and at the demo's former lr.
"""
from __future__ import annotations

import torch
from torch import nn

from .forward import lmm_forward
from .health import ImageTokenProbe, image_token_health
from .tuning import unwrap_llava


@torch.no_grad()
def match_text_init(model: nn.Module, batch: dict) -> dict[str, float]:
    """Rewrite the projector of `model` (LLaVA or its peft wrapper) from one calibration `batch` (the collator's
    output, with images); returns the image-token health before and after."""
    llava = unwrap_llava(model)
    projector = llava.model.multi_modal_projector
    capture = ImageTokenProbe(model)  # the training hooks: projector input and output, input embeddings
    try:
        lmm_forward(model, **batch)  # the training forward: dummy images and a cut tower are handled there
    finally:
        capture.remove()
    if capture.features is None:
        raise ValueError("match_text_init: the calibration batch has no image (the projector never ran)")
    if "image_mask" in batch and capture.features.shape[0] == batch["image_mask"].shape[0]:
        features = capture.features[batch["image_mask"].bool()]  # text-only samples carry dummy images
    else:
        features = capture.features
    text = (capture.ids != int(llava.config.image_token_id)) & batch["attention_mask"].bool()
    return match_text_weights(projector, features, capture.embeds[text].float())


@torch.no_grad()
def match_text_weights(projector: nn.Module, features: torch.Tensor, text_embeds: torch.Tensor) -> dict[str, float]:
    """The three rewrites of the module docstring on a stock projector (`linear_1`, `act`, `linear_2`), from tower
    `features` (N, Dv) and text-token embeddings (M, D); returns the health before and after."""
    features = features.reshape(-1, features.shape[-1]).float()
    before = image_token_health(projector(features), text_embeds)
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    w1 = projector.linear_1.weight / std
    projector.linear_1.bias.sub_(w1 @ mean)
    projector.linear_1.weight.copy_(w1)
    projector.linear_2.bias.sub_(projector(features).mean(dim=0))
    target = text_embeds.pow(2).mean(dim=-1).sqrt().mean()
    scale = target / projector(features).pow(2).mean(dim=-1).sqrt().mean().clamp_min(1e-12)
    projector.linear_2.weight.mul_(scale)
    projector.linear_2.bias.mul_(scale)
    after = image_token_health(projector(features), text_embeds)
    return {"ratio_before": before["image_norm_ratio"], "cosine_before": before["image_cosine"],
            "ratio_after": after["image_norm_ratio"], "cosine_after": after["image_cosine"]}
