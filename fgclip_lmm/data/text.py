"""Batch tokenisation for the FG-CLIP text paths with an explicit truncation policy.

`encode_texts` pads to the longest text in the batch (never to a fixed width) with the pad id (= eos for the
CLIP tokenizer). A text longer than `max_length` tokens, bos and eos included, either raises `TextTooLongError`
naming the record and field (`truncation="error"`) or is cut so that it still ends with eos, exactly as HF
truncation with a bos/eos post-processor does (`"truncate"`), and the cut is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fgclip_lmm.errors import FGClipError

Truncation = Literal["error", "truncate"]

# Width of an empty text batch: bos + eos, so a consumer that still runs the encoder gets valid pooling.
EMPTY_WIDTH = 2


class TextTooLongError(FGClipError, ValueError):
    """A text exceeds its token budget under `truncation: error`."""


def encode_texts(
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    field: str,
    truncation: Truncation = "error",
    record_ids: Sequence[str] | None = None,
) -> tuple[torch.Tensor, int]:
    """Tokenise `texts` -> (LongTensor (N, L<=max_length), number of truncated texts).

    `record_ids[i]` names where text i came from (e.g. "data.json record 12 box 3") for error messages.
    """
    if truncation not in ("error", "truncate"):
        raise ValueError(f"truncation must be 'error' or 'truncate', got {truncation!r}")
    if tokenizer.padding_side != "right":
        raise ValueError(f"encode_texts needs a right-padding tokenizer, got padding_side={tokenizer.padding_side!r}")
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if not texts:
        return torch.full((0, EMPTY_WIDTH), pad_id, dtype=torch.long), 0
    # Batches repeat phrases (hard negatives above all): tokenise each distinct text once, then gather rows.
    distinct = {text: i for i, text in enumerate(dict.fromkeys(texts))}
    rows = torch.tensor([distinct[text] for text in texts], dtype=torch.long)
    encoded = tokenizer(
        list(distinct),
        padding="longest",
        truncation=False,
        return_attention_mask=True,
        return_tensors="pt",
        verbose=False,
    )
    ids, lengths = encoded["input_ids"].long()[rows], encoded["attention_mask"].sum(1)[rows]
    empty = lengths <= tokenizer.num_special_tokens_to_add()
    if bool(empty.any()):  # readers reject empty texts; encoding one would train on padding
        row = int(empty.nonzero()[0, 0])
        where = record_ids[row] if record_ids is not None else f"text {row} of the batch"
        raise ValueError(f"{where}, field {field!r}: empty text reached the collator")
    too_long = lengths > max_length
    n_truncated = int(too_long.sum())
    if n_truncated and truncation == "error":
        row = int(too_long.nonzero()[0, 0])
        where = record_ids[row] if record_ids is not None else f"text {row} of the batch"
        raise TextTooLongError(
            f"{where}, field {field!r}: {int(lengths[row])} tokens exceed max_length {max_length} "
            f"(set truncation: truncate to cut and count instead)"
        )
    ids = ids[:, : min(int(lengths.max()), max_length)]
    ids[too_long, -1] = eos_id
    return ids, n_truncated
