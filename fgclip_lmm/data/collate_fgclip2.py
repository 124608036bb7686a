"""The FG-CLIP 2 collator: the same FineHARD / stage-1 samples -> the NaFlex batch `FGCLIP2Model.forward` takes.

Batch contract = the v1 contract (`fgclip_lmm.data.collate`) with two changes the official trainer makes:

| key | shape | meaning |
|---|---|---|
| `pixel_values` | (B, N, 3 p^2) float | NaFlex patches (transformers' `Siglip2ImageProcessorPil`), zero-padded to N |
| `pixel_attention_mask` | (B, N) long | 1 = real patch |
| `spatial_shapes` | (B, 2) long | each image's (h, w) patch grid, h * w <= N |
| `long_input_ids` | (B, 196) long | long captions, padded to exactly `long_max_length` |
| `short_input_ids`, `box_input_ids`, `hard_input_ids` | (., 64) long | padded to exactly `short_max_length` |

N is the batch budget: the smallest of `patch_budgets` that holds the largest native grid in the batch (the
official collator's rule, `naflex.batch_budget`); each image is resized to the largest aspect-preserving grid within
it. Texts are padded to the fixed widths with the tokenizer's own padding side (the official
`padding="max_length"`), because the text tower pools its last position: a batch-longest width would change every
feature. Truncation follows `CollatorConfig.truncation` (error, or cut and count), as in v1.

The readers are v1's: `NaFlexImages` replaces their squash-resize preprocessor so samples carry the RGB image.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image

from fgclip_lmm.data.bad_records import BadRecordReport
from fgclip_lmm.data.collate import CollatorConfig, FGClipCollator
from fgclip_lmm.data.images import load_rgb
from fgclip_lmm.data.text import TextTooLongError
from fgclip_lmm.model.naflex import PATCH_BUDGETS, batch_budget, make_image_processor, naflex_batch


def encode_fixed(tokenizer, texts: Sequence[str], max_length: int, field: str, truncation: str = "error",
                 record_ids: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ids, attention_mask, number truncated): (N, max_length) padded to exactly max_length on the tokenizer's
    padding side (the official `padding="max_length"`); distinct texts are tokenised once. A text over budget
    raises `TextTooLongError` naming its record and field under `truncation="error"`, else it is cut (HF
    truncation, special tokens kept) and counted."""
    pad_id = tokenizer.pad_token_id
    if not texts:
        empty = torch.full((0, max_length), pad_id, dtype=torch.long)
        return empty, torch.zeros_like(empty), 0
    distinct = {text: i for i, text in enumerate(dict.fromkeys(texts))}
    rows = torch.tensor([distinct[text] for text in texts], dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids in tokenizer(list(distinct), verbose=False)["input_ids"]])[rows]
    where = (lambda row: record_ids[row]) if record_ids is not None else (lambda row: f"text {row} of the batch")
    empty = lengths <= tokenizer.num_special_tokens_to_add()
    if bool(empty.any()):  # readers reject empty texts; encoding one would train on padding
        raise ValueError(f"{where(int(empty.nonzero()[0, 0]))}, field {field!r}: empty text reached the encoder")
    too_long = lengths > max_length
    if bool(too_long.any()) and truncation == "error":
        row = int(too_long.nonzero()[0, 0])
        raise TextTooLongError(f"{where(row)}, field {field!r}: {int(lengths[row])} tokens exceed max_length "
                               f"{max_length} (set truncation: truncate to cut and count instead)")
    encoded = tokenizer(list(distinct), padding="max_length", truncation=True, max_length=max_length,
                        return_attention_mask=True, return_tensors="pt", verbose=False)
    return encoded["input_ids"].long()[rows], encoded["attention_mask"].long()[rows], int(too_long.sum())


class NaFlexImages:
    """The readers' image loader for NaFlex: the decoded RGB image, unresized (the collator resizes per batch),
    under the same pixel budget as the squash-resize preprocessor it replaces."""

    def __init__(self, max_pixels: int | None = None):
        self.max_pixels = max_pixels

    def load(self, source: str | os.PathLike | bytes) -> Image.Image:
        return load_rgb(source, self.max_pixels)


class FGClip2Collator(FGClipCollator):
    """Callable collate_fn for FG-CLIP 2; boxes and hard negatives are packed exactly as in v1."""

    def __init__(self, tokenizer, config: CollatorConfig, patch_size: int, patch_budgets: Sequence[int] = PATCH_BUDGETS,
                 report: BadRecordReport | None = None):
        super().__init__(tokenizer, config, report)
        if not patch_budgets or any(int(b) <= 0 for b in patch_budgets):
            raise ValueError(f"patch_budgets must be positive patch counts, got {list(patch_budgets)}")
        self.patch_size, self.patch_budgets = int(patch_size), tuple(sorted(int(b) for b in patch_budgets))
        self.processor = make_image_processor(self.patch_size, self.patch_budgets[-1])

    def _encode(self, texts: list[str], max_length: int, field: str, record_ids: list[str]) -> torch.Tensor:
        ids, _, n_truncated = encode_fixed(self.tokenizer, texts, max_length, field, self.config.truncation,
                                           record_ids)
        self.report.count_truncations(field, n_truncated)
        return ids

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        images = [s["pixel_values"] for s in samples]
        if not all(isinstance(image, Image.Image) for image in images):
            raise TypeError("FG-CLIP 2 collation needs PIL images in `pixel_values`; build the reader with "
                            "NaFlexImages as its preprocessor")
        cfg = self.config
        record_ids = [s["record_id"] for s in samples]
        budget = batch_budget(images, self.patch_size, self.patch_budgets)
        batch = naflex_batch(self.processor, images, max_num_patches=budget)
        batch["long_input_ids"] = self._encode([s["long_caption"] for s in samples], cfg.long_max_length,
                                               "long_caption", record_ids)
        batch["short_input_ids"] = self._encode([s["short_caption"] for s in samples], cfg.short_max_length,
                                                "short_caption", record_ids)
        if cfg.stage == 2:
            batch.update(self._boxes_and_hard(samples))
        return batch
