"""Run a vision tower only up to the block whose output the LMM reads.

LLaVA reads `hidden_states[feature_layer]` (default -2): the tower's last block is computed and thrown away, 1/L
of the tower's work (8% for ViT-B/16, 4% for ViT-L/14). `run_needed_blocks(vision_model, feature_layer)` swaps
the encoder's `layers` for `LeadingBlocks`, a `ModuleList` that still holds every block (so the state dict, peft
adapters, DeepSpeed partitioning and the exported checkpoint are unchanged) but iterates only the blocks up to the
one read. Features are bit-identical: the same blocks run on the same inputs.

With fewer blocks run, a negative `feature_layer` would index a shorter `hidden_states` tuple, so callers select
with the non-negative index `hidden_state_index` returns (valid whether or not the blocks were cut). transformers
resolves that index against `config.num_hidden_layers` and keeps only the selected state (`select_hidden_states`).

Used by the tower classes here (`VisionTower.forward`), by LMM training (`lmm_forward`, with the trainer calling
`prepare_llava_tower`) and by the lmms-eval plugin. `run_all_blocks` restores the stock module (assembly does, so
an assembled in-memory model behaves exactly like its saved files).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class LeadingBlocks(nn.ModuleList):
    """Every block of a transformer encoder, of which iteration yields only the first `active`."""

    def __init__(self, modules: Any = None, active: int | None = None) -> None:
        super().__init__(modules)
        self.active = len(self) if active is None else active

    def __iter__(self) -> Iterator[nn.Module]:
        return itertools.islice(iter(self._modules.values()), self.active)

    def extra_repr(self) -> str:
        return f"runs the first {self.active} of {len(self)} blocks"


def hidden_state_index(num_layers: int, feature_layer: int | list[int]) -> int | list[int]:
    """`feature_layer` (negative allowed, as in LLaVA) as an index >= 0 into the `num_layers + 1` hidden states."""
    layers = feature_layer if isinstance(feature_layer, (list, tuple)) else [feature_layer]
    out = []
    for layer in layers:
        if not isinstance(layer, int) or not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(f"feature layer {layer!r} is out of range for {num_layers} blocks "
                             f"(hidden_states has {num_layers + 1} entries)")
        out.append(layer % (num_layers + 1))
    return out if isinstance(feature_layer, (list, tuple)) else out[0]


def _encoder(vision_model: nn.Module) -> nn.Module | None:
    """The module holding the blocks as `.layers` (CLIP and SigLIP vision models), or None for other layouts."""
    for owner in (vision_model, getattr(vision_model, "vision_model", None)):
        encoder = getattr(owner, "encoder", None)
        if isinstance(getattr(encoder, "layers", None), nn.ModuleList):
            return encoder
    return None


def run_needed_blocks(vision_model: nn.Module, feature_layer: int | list[int]) -> int | list[int]:
    """Make `vision_model` run only the blocks up to `feature_layer`; return the index to read it at.

    Idempotent. A vision model of another layout keeps running every block (the returned index is valid either
    way, so callers need not know).
    """
    num_layers = int(vision_model.config.num_hidden_layers)
    index = hidden_state_index(num_layers, feature_layer)
    needed = max(index) if isinstance(index, list) else index
    encoder = _encoder(vision_model)
    if encoder is not None:
        if isinstance(encoder.layers, LeadingBlocks):
            encoder.layers.active = needed
        else:
            encoder.layers = LeadingBlocks(list(encoder.layers), needed)
    return index


def run_all_blocks(vision_model: nn.Module) -> None:
    """Undo `run_needed_blocks`: the encoder's `layers` is a plain `ModuleList` again."""
    encoder = _encoder(vision_model)
    if encoder is not None and isinstance(encoder.layers, LeadingBlocks):
        encoder.layers = nn.ModuleList(list(encoder.layers._modules.values()))


def llava_image_features(llava: nn.Module, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
    """`get_image_features` of an HF LLaVA model at its configured feature layer and select strategy, read at the
    non-negative hidden-state index (correct whether or not `prepare_llava_tower` cut the tower)."""
    config = llava.config
    index = hidden_state_index(int(config.vision_config.num_hidden_layers), config.vision_feature_layer)
    return llava.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=index,
                                          vision_feature_select_strategy=config.vision_feature_select_strategy,
                                          **kwargs)


def prepare_llava_tower(llava: nn.Module, fuse_activation: bool = True, index_in_config: bool = False) -> None:
    """Speed-ups for an HF LLaVA model's tower in training and evaluation (results unchanged, checkpoint too):
    skip the blocks after `vision_feature_layer` and, with `fuse_activation`, run CLIP's QuickGELU fused.

    Afterwards read image features with `llava_image_features`. The stock forward with `pixel_values` indexes
    `hidden_states[config.vision_feature_layer]` itself, which for a negative layer needs every block:
    `index_in_config=True` writes the equivalent non-negative index into the in-memory config so that path works
    too (for models that are not saved again, e.g. in evaluation; a saved config would then differ in form).
    """
    tower = llava.model.vision_tower
    index = run_needed_blocks(tower, llava.config.vision_feature_layer)
    if index_in_config:
        llava.config.vision_feature_layer = index
    if fuse_activation:
        from fgclip_lmm.model.activations import fuse_quick_gelu

        fuse_quick_gelu(tower)
