"""Shared image prefixes for the lmms-eval plugin: prefill each distinct prompt prefix once, then continue every
question on that image from a copy of its KV cache.

POPE asks 6 questions per image per split and MME 2, and every question's prompt is identical up to and including
the image block (the chat template's system text, the user role, the 576 image tokens of a 336 px tower) before
its ~20 question tokens. `FGClipLlava` batches an image's questions together (`whole_image_batches`: an image's
requests stay in one batch when they fit); this module lets such a batch run the language model over each
distinct prefix once:

1. `split_parts`: each row's prefix is its tokens up to and including the last image token (at least one token
   is left after it). Rows with the same prefix length are one part; a part whose rows all have different
   prefixes gains nothing and runs the plain left-padded path (`prefix_len = 0`), as do rows without images.
2. `shared_inputs`: the distinct prefixes (same tokens and same images) are prefilled in one language-model
   forward; the cache rows are then gathered so each question gets a copy of its prefix's cache. The question
   tokens follow the prefix with the padding in between (`[prefix][pad..][question]`, attention mask 0 on the
   pads): generation positions come from the mask's cumulative sum, so every question token sits where it sits
   in its own unpadded prompt. For scoring (`loglikelihood`), rows are right-padded instead, which no real token
   ever attends to.

transformers' `generate` takes the full `inputs_embeds` together with a prefilled cache and runs only the
uncached tokens (its documented prefix-cache reuse); `generate` alone cannot share one prefix between several
rows, which is the part written here. Results equal the plain path up to float rounding (greedy answers
identical: tests on every packaged task; `share_prefix=false` turns it off).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def _cache_kwarg(fn: Any) -> str:
    """The keyword transformers takes the KV cache by: `cache` (5.2x) or `past_key_values` (earlier 5.x)."""
    return "cache" if "cache" in inspect.signature(fn).parameters else "past_key_values"


@dataclass
class Part:
    """Rows of one batch (positions in it) that run as one call; `prefix_len` 0 means the plain path."""

    rows: list[int]
    prefix_len: int = 0


def whole_image_batches(ordered: list[Any], image_keys: list[tuple[str, ...]], size: int) -> list[list[Any]]:
    """Cut `ordered` (sorted so that an image's requests are adjacent) into batches of at most `size` that keep
    each image's requests together, so each image's prefix is prefilled once; an image with more than `size`
    requests fills whole batches first."""
    batches: list[list[Any]] = []
    current: list[Any] = []
    start = 0
    while start < len(ordered):
        end = start
        while end < len(ordered) and image_keys[end] == image_keys[start]:
            end += 1
        same = ordered[start:end]
        if current and len(current) + len(same) > size:
            batches.append(current)
            current = []
        while len(same) > size:
            batches.append(same[:size])
            same = same[size:]
        current += same
        start = end
    if current:
        batches.append(current)
    return batches


def prefix_length(ids: torch.Tensor, image_token_id: int, keep_after: int = 1) -> int:
    """Tokens up to and including the last image token, leaving at least `keep_after` tokens; 0 without images."""
    positions = (ids == image_token_id).nonzero()
    if positions.numel() == 0:
        return 0
    return max(0, min(int(positions[-1]) + 1, ids.numel() - keep_after))


def split_parts(ids: list[torch.Tensor], image_keys: list[tuple[str, ...]], image_token_id: int,
                keep_after: list[int] | None = None) -> list[Part]:
    """Cut a batch into parts: shared-prefix parts (one per prefix length with a repeated prefix) + a plain one."""
    keep_after = keep_after or [1] * len(ids)
    by_length: dict[int, list[int]] = {}
    for row, (tokens, keep) in enumerate(zip(ids, keep_after, strict=True)):
        by_length.setdefault(prefix_length(tokens, image_token_id, keep), []).append(row)
    parts, plain = [], []
    for length, rows in sorted(by_length.items()):
        distinct = {(image_keys[r], tuple(ids[r][:length].tolist())) for r in rows}
        if length == 0 or len(distinct) == len(rows):
            plain += rows
        else:
            parts.append(Part(rows, length))
    if plain:
        parts.append(Part(sorted(plain)))
    return parts


def distinct_prefixes(ids: list[torch.Tensor], image_keys: list[tuple[str, ...]], length: int
                      ) -> tuple[list[int], torch.Tensor]:
    """(a representative row of each distinct prefix, (n,) index of each row's prefix among them)."""
    first: dict[tuple, int] = {}
    index = [first.setdefault((image_keys[r], tuple(ids[r][:length].tolist())), len(first)) for r in range(len(ids))]
    representatives = [0] * len(first)
    for row, i in reversed(list(enumerate(index))):
        representatives[i] = row
    return representatives, torch.tensor(index, dtype=torch.long)


def pad_after_prefix(ids: list[torch.Tensor], length: int, pad_id: int, right: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L) ids and mask: prefix, then `[pad..][rest]` (generation) or `[rest][pad..]` (scoring, `right`)."""
    width = max(t.numel() for t in ids)
    out = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, tokens in enumerate(ids):
        rest = tokens.numel() - length
        out[row, :length] = tokens[:length]
        start = length if right else width - rest
        out[row, start:start + rest] = tokens[length:]
        mask[row, :length] = 1
        mask[row, start:start + rest] = 1
    return out, mask


@torch.no_grad()
def prefill(llava: nn.Module, prefix_embeds: torch.Tensor) -> Any:
    """KV cache of the language model over `prefix_embeds` (U, P, D) (no LM head: only the cache is needed)."""
    language_model = llava.model.language_model
    out = language_model(inputs_embeds=prefix_embeds, use_cache=True)
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def shared_inputs(llava: nn.Module, embeds: torch.Tensor, ids: list[torch.Tensor], image_keys: list[tuple[str, ...]],
                  length: int) -> dict[str, Any]:
    """The cache for a part: its distinct prefixes prefilled once, rows gathered to one copy per question.

    `embeds` (n, L, D) are the part's full input embeddings laid out by `pad_after_prefix`; returns
    `{cache keyword: cache}` to pass to `generate` / the forward next to them.
    """
    representatives, index = distinct_prefixes(ids, image_keys, length)
    cache = prefill(llava, embeds[representatives, :length])
    cache.reorder_cache(index.to(embeds.device))  # gathers rows: each question gets its own copy
    return {_cache_kwarg(llava.forward): cache}
