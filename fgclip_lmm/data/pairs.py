"""Stage-1 long-caption pairs reader: ShareGPT4V-style JSON and plain `{image, long_caption, short_caption}` rows.

Two record shapes are accepted in any of the record files `records_io` reads (JSON array, JSONL, parquet):
* ShareGPT4V: `{"id", "image", "conversations": [{"from": "human", ...}, {"from": "gpt", "value": <long>}]}`.
  The long caption is the first `gpt` turn; the short caption is its first sentence (Long-CLIP's convention),
  unless the record also has `short_caption`.
* Plain: `{"image", "long_caption", "short_caption"}`.

Samples: `pixel_values`, `long_caption`, `short_caption` (with `short_caption_prefix`, default none), `record_id`;
the FG-CLIP collator with `stage=1` batches them. Large shards stream through `streaming.stream_pairs(config)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy, OnBadRecord
from fgclip_lmm.data.base import ImageRecordDataset, require_text, resolve_record_image
from fgclip_lmm.data.images import ImageConfig, ImagePreprocessor
from fgclip_lmm.data.records_io import read_records, resolve_data_files

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


@dataclass(frozen=True)
class PairsConfig:
    data_path: str | list
    image_root: str | None = None
    strip_prefixes: tuple[str, ...] = ()
    short_caption_prefix: str = ""
    image_size: int = 224
    on_bad_record: OnBadRecord = "error"
    check_image_paths: bool = True
    allow_paths_outside_root: bool = False  # absolute / `..` image values are bad records unless true
    max_image_pixels: int | None = None  # pixel budget (None: FGCLIP_MAX_IMAGE_PIXELS or 50 MP; 0 = no limit)


@dataclass
class PairRecord:
    source: str
    index: int
    image_path: Path
    long_caption: str
    short_caption: str
    image_field: str = "image"


def first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def parse_pair_record(
    raw: dict, source: str, index: int, config: PairsConfig, policy: BadRecordPolicy
) -> PairRecord | None:
    image = require_text(raw, "image", policy, source, index)
    if image is None:
        return None
    if "conversations" in raw:
        turns = raw["conversations"]
        answers = (
            [t for t in turns if isinstance(t, dict) and t.get("from") == "gpt"] if isinstance(turns, list) else []
        )
        if not answers:
            policy.reject(BadReason.MISSING_FIELD, source, index, "conversations", "no 'gpt' turn holds the caption")
            return None
        long_caption = require_text(answers[0], "value", policy, source, index, label="conversations[gpt].value")
        if long_caption is None:
            return None
        short = raw.get("short_caption") or first_sentence(long_caption)
    else:
        long_caption = require_text(raw, "long_caption", policy, source, index)
        short = require_text(raw, "short_caption", policy, source, index) if long_caption is not None else None
        if short is None:
            return None
    path = resolve_record_image(image, config, policy, source, index, "image")
    if path is None:
        return None
    return PairRecord(source, index, path, long_caption, config.short_caption_prefix + short)


def make_pair_sample(record: PairRecord, pixels, rng=None) -> dict:
    return {
        "pixel_values": pixels,
        "long_caption": record.long_caption,
        "short_caption": record.short_caption,
        "record_id": f"{record.source} record {record.index}",
    }


class LongCaptionPairsDataset(ImageRecordDataset):
    """Map-style stage-1 reader; records validated at construction, images decoded lazily."""

    def __init__(self, config: PairsConfig, policy: BadRecordPolicy | None = None):
        policy = policy or BadRecordPolicy(config.on_bad_record)
        super().__init__(ImagePreprocessor(ImageConfig(size=config.image_size, max_pixels=config.max_image_pixels)),
                         policy)
        self.config = config
        for path in resolve_data_files(config.data_path):
            for index, raw in read_records(path, policy):
                record = parse_pair_record(raw, str(path), index, config, policy)
                if record is not None:
                    self.records.append(record)
        self._finalise()

    def __getitem__(self, index: int) -> dict:
        used, pixels = self._load_image(index)
        return make_pair_sample(self.records[used], pixels)
