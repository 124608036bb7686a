"""The training forward of an HF LLaVA model over a collated batch, dummy images included.

Stock `LlavaForConditionalGeneration.forward(pixel_values=...)` requires one `<image>` block per image, so it
cannot take the dummy image of a text-only sample. `lmm_forward` does the same splice itself with exactly one
tower call and one projector call per micro-batch, on every rank:

1. `inputs_embeds = embed(input_ids)`;
2. features of *all* images, dummies included, through `model.model.get_image_features` (the stock path: same
   feature layer, select strategy and projector as inference; read at the non-negative feature-layer index, so
   a tower cut after that layer by `tower.prepare_llava_tower` gives the same features);
3. the real images' features are scattered into the `<image>` positions in order (the stock `masked_scatter`);
4. `0 ×` the dummies' features is added, so the tower and projector are in the autograd graph even for a
   text-only micro-batch (ZeRO-3 reduces the same parameters on every rank; gradients are unchanged);
5. the LM runs on `inputs_embeds`, with the stock shifted cross-entropy over `labels`.

For image-only batches the logits equal the stock forward's (tested), so training and inference agree.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..tower.blocks import llava_image_features
from .tuning import unwrap_llava


def lmm_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    image_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> Any:
    """Forward a collated batch (`dataset.LmmCollator` output) through an HF LLaVA model or a peft wrapper of it."""
    llava = unwrap_llava(model)
    config = llava.config
    inputs_embeds = llava.get_input_embeddings()(input_ids)
    is_image = input_ids == config.image_token_id
    if pixel_values is not None:
        if image_mask is None:
            image_mask = torch.ones(pixel_values.shape[0], dtype=torch.bool, device=pixel_values.device)
        if image_mask.shape != (pixel_values.shape[0],):
            raise ValueError(f"image_mask shape {tuple(image_mask.shape)} does not match {pixel_values.shape[0]} "
                             "images")
        tower_dtype = next(llava.model.vision_tower.parameters()).dtype
        outputs = llava_image_features(llava, pixel_values.to(tower_dtype), return_dict=True)
        features = torch.stack(list(outputs.pooler_output)).to(inputs_embeds.dtype)
        real = features[image_mask.to(features.device)]
        n_slots = int(is_image.sum())
        if n_slots != real.shape[0] * real.shape[1]:
            raise ValueError(
                f"{n_slots} image-token positions in input_ids but {real.shape[0]} real image(s) x {features.shape[1]} "
                "tokens; every image needs exactly one full <image> block"
            )
        inputs_embeds = inputs_embeds.masked_scatter(is_image.unsqueeze(-1), real)
        dummies = features[~image_mask.to(features.device)]
        if dummies.numel():
            inputs_embeds = inputs_embeds + 0.0 * dummies.sum()
    elif bool(is_image.any()):
        raise ValueError(f"input_ids hold {int(is_image.sum())} image-token positions but no pixel_values were given")
    return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs)
