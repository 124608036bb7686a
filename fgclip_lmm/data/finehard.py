"""FineHARD reader (FG-CLIP stage 2): official item schema, validation, map-style and streaming datasets.

Item schema (docs/model.md, "Item schema"): `f_path`, `caption` (long), `short_caption` (the prefix "a photo of " is
prepended, configurable), `bbox_info[{bbox: [x1, y1, x2, y2, score?], short_expr, long_expr, flag_short_neg,
short_expr_negs: {key: negative, ...}}]`. Only the first `max_boxes` entries are used; negatives are taken in key
order and a box flagged `flag_short_neg == 1` must carry exactly `num_hard_negatives` of them.

Granularity of the bad-record policy: a record-level problem (missing image or caption, invalid JSON) drops the
record; a problem inside one box (out of [0, 1], degenerate, missing phrase, wrong negative count) drops that box
and its texts. Both are counted under `skip`.

A sample is a dict: `pixel_values` (3, S, S), `long_caption`, `short_caption`, `boxes` (n, 4) float normalised
xyxy, `box_texts` (n; short_expr or long_expr, picked per box by an RNG seeded with (seed, epoch, index)),
`hard_box_local` (indices of boxes with negatives), `hard_texts` (per hard box: positive short_expr, then its
negatives), `record_id`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy, OnBadRecord
from fgclip_lmm.data.base import ImageRecordDataset, require_text, resolve_record_image
from fgclip_lmm.data.images import ImageConfig, ImagePreprocessor
from fgclip_lmm.data.records_io import read_records, resolve_data_files


@dataclass(frozen=True)
class FineHardConfig:
    data_path: str | list
    image_root: str | None = None
    strip_prefixes: tuple[str, ...] = ("grit-20m/data-12m/",)
    max_boxes: int = 4
    num_hard_negatives: int = 10
    short_caption_prefix: str = "a photo of "
    image_size: int = 224
    on_bad_record: OnBadRecord = "error"
    check_image_paths: bool = True  # eager os.stat per record; turn off for remote or huge image stores
    allow_paths_outside_root: bool = False  # absolute / `..` f_path values are bad records unless true
    max_image_pixels: int | None = None  # pixel budget (None: FGCLIP_MAX_IMAGE_PIXELS or 50 MP; 0 = no limit)
    seed: int = 0


@dataclass
class FineHardRecord:
    source: str
    index: int
    image_path: Path
    caption: str
    short_caption: str
    boxes: np.ndarray  # (n, 4) float32 normalised xyxy
    short_exprs: list[str]
    long_exprs: list[str]
    negatives: list[list[str] | None]  # per box; None = no hard negatives
    image_field: str = field(default="f_path")


def parse_finehard_record(
    raw: dict, source: str, index: int, config: FineHardConfig, policy: BadRecordPolicy
) -> FineHardRecord | None:
    """Validate one raw item; None when the whole record is rejected (under `skip`)."""
    f_path = require_text(raw, "f_path", policy, source, index)
    caption = require_text(raw, "caption", policy, source, index) if f_path is not None else None
    short = (
        require_text(raw, "short_caption", policy, source, index, transform=lambda t: config.short_caption_prefix + t)
        if caption is not None
        else None
    )
    if short is None:
        return None
    boxes_raw = raw.get("bbox_info")
    if not isinstance(boxes_raw, list):
        policy.reject(BadReason.MISSING_FIELD, source, index, "bbox_info", "expected a list of boxes")
        return None
    image_path = resolve_record_image(f_path, config, policy, source, index, "f_path")
    if image_path is None:
        return None
    parsed = [
        _parse_box(box, f"bbox_info[{j}]", source, index, config.num_hard_negatives, policy)
        for j, box in enumerate(boxes_raw[: config.max_boxes])
    ]
    kept = [p for p in parsed if p is not None]
    return FineHardRecord(
        source,
        index,
        image_path,
        caption,
        short,
        boxes=np.asarray([p[0] for p in kept], dtype=np.float32).reshape(-1, 4),
        short_exprs=[p[1] for p in kept],
        long_exprs=[p[2] for p in kept],
        negatives=[p[3] for p in kept],
    )


def _parse_box(box: object, label: str, source: str, index: int, n_neg: int, policy: BadRecordPolicy):
    if not isinstance(box, dict):
        policy.reject(BadReason.MISSING_FIELD, source, index, label, "expected a box object")
        return None
    coords = box.get("bbox")
    if (
        not isinstance(coords, (list, tuple))
        or len(coords) < 4
        or not all(isinstance(v, (int, float)) for v in coords[:4])
    ):
        policy.reject(
            BadReason.MISSING_FIELD, source, index, f"{label}.bbox", f"expected [x1, y1, x2, y2, ...], got {coords!r}"
        )
        return None
    x1, y1, x2, y2 = (float(v) for v in coords[:4])
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (x1, y1, x2, y2)):
        policy.reject(BadReason.BOX_OUT_OF_RANGE, source, index, f"{label}.bbox", f"{[x1, y1, x2, y2]} not in [0, 1]")
        return None
    if x1 >= x2 or y1 >= y2:
        policy.reject(
            BadReason.BOX_DEGENERATE,
            source,
            index,
            f"{label}.bbox",
            f"{[x1, y1, x2, y2]}: x1 > x2, y1 > y2 or zero area",
        )
        return None
    short_expr = require_text(box, "short_expr", policy, source, index, label=f"{label}.short_expr")
    long_expr = (
        require_text(box, "long_expr", policy, source, index, label=f"{label}.long_expr") if short_expr else None
    )
    if long_expr is None:
        return None
    flag = box.get("flag_short_neg")
    if flag not in (0, 1, True, False):
        policy.reject(
            BadReason.MISSING_FIELD, source, index, f"{label}.flag_short_neg", f"expected 0 or 1, got {flag!r}"
        )
        return None
    negs = None
    if flag:
        raw_negs = box.get("short_expr_negs")
        values = (
            list(raw_negs.values()) if isinstance(raw_negs, dict) else raw_negs if isinstance(raw_negs, list) else []
        )
        values = [v for v in values if v is not None]  # parquet/struct rows pad absent keys with nulls
        if len(values) != n_neg:
            policy.reject(
                BadReason.WRONG_NEGATIVE_COUNT,
                source,
                index,
                f"{label}.short_expr_negs",
                f"{len(values)} negatives, expected exactly {n_neg}",
            )
            return None
        if not all(isinstance(v, str) and v.strip() for v in values):
            policy.reject(BadReason.EMPTY_CAPTION, source, index, f"{label}.short_expr_negs", "a negative is empty")
            return None
        negs = values
    return (x1, y1, x2, y2), short_expr, long_expr, negs


def make_finehard_sample(record: FineHardRecord, pixels: torch.Tensor, rng: np.random.Generator) -> dict:
    use_long = rng.random(len(record.short_exprs)) < 0.5  # official: random.choice(short_expr, long_expr)
    hard = [j for j, negs in enumerate(record.negatives) if negs is not None]
    return {
        "pixel_values": pixels,
        "long_caption": record.caption,
        "short_caption": record.short_caption,
        "boxes": torch.from_numpy(record.boxes),
        "box_texts": [lo if u else sh for sh, lo,
                      u in zip(record.short_exprs, record.long_exprs, use_long, strict=True)],
        "hard_box_local": hard,
        "hard_texts": [text for j in hard for text in (record.short_exprs[j], *record.negatives[j])],
        "record_id": f"{record.source} record {record.index}",
    }


class FineHardDataset(ImageRecordDataset):
    """Map-style FineHARD reader: every record validated at construction, images decoded lazily.

    Call `set_epoch(e)` before each epoch's DataLoader iterator is created so the short/long region-phrase
    choice changes per epoch (with `persistent_workers=True` the workers keep the epoch they started with).
    """

    def __init__(self, config: FineHardConfig, policy: BadRecordPolicy | None = None):
        policy = policy or BadRecordPolicy(config.on_bad_record)
        super().__init__(ImagePreprocessor(ImageConfig(size=config.image_size, max_pixels=config.max_image_pixels)),
                         policy)
        self.config = config
        self.epoch = 0
        for path in resolve_data_files(config.data_path):
            for index, raw in read_records(path, policy):
                record = parse_finehard_record(raw, str(path), index, config, policy)
                if record is not None:
                    self.records.append(record)
        self._finalise()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        used, pixels = self._load_image(index)
        rng = np.random.default_rng((self.config.seed, self.epoch, used))
        return make_finehard_sample(self.records[used], pixels, rng)
