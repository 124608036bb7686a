"""The FG-CLIP collator: samples from the FineHARD / stage-1 readers -> the batch `FGCLIPModel.forward` takes.

Batch contract (every text tensor is padded to the longest text in the batch with the pad id, = eos):

| key | shape | meaning |
|---|---|---|
| `pixel_values` | (B, 3, S, S) float | squash-resized, CLIP-normalised |
| `long_input_ids` | (B, Ll <= long_max_length) long | long captions (248-token path) |
| `short_input_ids` | (B, Ls <= short_max_length) long | short captions (77-token path) |
| `box_counts` | (B,) long | valid boxes per image (stage 2 only, as are the keys below) |
| `boxes` | (K, 4) float | normalised xyxy of the valid boxes, packed in image order; K = box_counts.sum() |
| `box_input_ids` | (K, <=77) long | region phrase of each box |
| `hard_box_index` | (M,) long | indices into the K boxes of those with hard negatives |
| `hard_input_ids` | (M * (1 + n_neg), <=77) long | per hard box: positive short_expr, then its negatives |
| `hard_counts` | (B,) long | hard boxes per image |

Nothing padded is ever encoded: there are no padding boxes and no empty texts. A batch without boxes or without
hard negatives yields K = 0 / M = 0 tensors of width 2 (bos + eos), never a crash (docs/model.md,
"Pitfalls of the official code and what this project does").

Pass the dataset's report (`FGClipCollator(tok, cfg, report=dataset.policy.report)`) so truncations and skipped
records end up in one end-of-run summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import torch

from fgclip_lmm.data.bad_records import BadRecordReport
from fgclip_lmm.data.text import Truncation, encode_texts


@dataclass(frozen=True)
class CollatorConfig:
    stage: int = 2  # 1: global keys only; 2: + boxes and hard negatives
    long_max_length: int = 248
    short_max_length: int = 77
    num_hard_negatives: int = 10
    truncation: Truncation = "error"


class FGClipCollator:
    """Callable collate_fn; truncations are counted in `report` (shared across DataLoader workers)."""

    def __init__(self, tokenizer, config: CollatorConfig | None = None, report: BadRecordReport | None = None):
        self.tokenizer = tokenizer
        self.config = config or CollatorConfig()
        if self.config.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.config.stage}")
        self.report = report or BadRecordReport()

    def _encode(self, texts: list[str], max_length: int, field: str, record_ids: list[str]) -> torch.Tensor:
        ids, n_truncated = encode_texts(self.tokenizer, texts, max_length, field, self.config.truncation, record_ids)
        self.report.count_truncations(field, n_truncated)
        return ids

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        cfg = self.config
        record_ids = [s["record_id"] for s in samples]
        batch = {
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "long_input_ids": self._encode(
                [s["long_caption"] for s in samples], cfg.long_max_length, "long_caption", record_ids
            ),
            "short_input_ids": self._encode(
                [s["short_caption"] for s in samples], cfg.short_max_length, "short_caption", record_ids
            ),
        }
        if cfg.stage == 2:
            batch.update(self._boxes_and_hard(samples))
        return batch

    def _boxes_and_hard(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        cfg = self.config
        group = 1 + cfg.num_hard_negatives
        if any("boxes" not in s for s in samples):
            raise ValueError("stage-2 collation needs FineHARD samples (with boxes); use stage=1 for caption pairs")
        box_counts = torch.tensor([len(s["box_texts"]) for s in samples], dtype=torch.long)
        hard_counts = torch.tensor([len(s["hard_box_local"]) for s in samples], dtype=torch.long)
        for s in samples:
            if len(s["hard_texts"]) != group * len(s["hard_box_local"]):
                raise ValueError(
                    f"{s['record_id']}: {len(s['hard_texts'])} hard texts for {len(s['hard_box_local'])} "
                    f"hard boxes; expected {group} per box (num_hard_negatives={cfg.num_hard_negatives})"
                )
        box_offsets = torch.cumsum(box_counts, 0) - box_counts
        hard_box_index = torch.tensor(list(chain.from_iterable(s["hard_box_local"] for s in samples)), dtype=torch.long)
        hard_box_index = hard_box_index + torch.repeat_interleave(box_offsets, hard_counts)
        box_owner = [s["record_id"] for s in samples for _ in s["box_texts"]]
        hard_owner = [s["record_id"] for s in samples for _ in s["hard_texts"]]
        return {
            "box_counts": box_counts,
            "boxes": torch.cat([s["boxes"].reshape(-1, 4).float() for s in samples]),
            "box_input_ids": self._encode(
                list(chain.from_iterable(s["box_texts"] for s in samples)), cfg.short_max_length, "box_text", box_owner
            ),
            "hard_box_index": hard_box_index,
            "hard_input_ids": self._encode(
                list(chain.from_iterable(s["hard_texts"] for s in samples)),
                cfg.short_max_length,
                "hard_text",
                hard_owner,
            ),
            "hard_counts": hard_counts,
        }
