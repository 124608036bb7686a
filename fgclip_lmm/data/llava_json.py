"""LLaVA instruction / caption JSON reader (docs/llava.md, "Training data").

Record: `{"id", "image" (optional), "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ...}, ...]}`, checked by the rules of `fgclip_lmm.data.conversations` (the ones the LMM
encoder applies): turns alternate human / gpt, start with human and end with a non-empty gpt answer; a record
with `image` holds exactly one `<image>` placeholder, an image-less (text-only) record none.

Samples: `id`, `conversations` (list of {"from", "value"}), `pixel_values` ((3, S, S) or None for text-only
records), `has_image`, `record_id`. Large files stream through `streaming.stream_llava(config)`.
Tokenisation and label masking belong to the LMM trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy, OnBadRecord
from fgclip_lmm.data.base import ImageRecordDataset, resolve_record_image
from fgclip_lmm.data.conversations import ConversationError, check_conversation
from fgclip_lmm.data.images import ImageConfig, ImagePreprocessor
from fgclip_lmm.data.records_io import read_records, resolve_data_files


@dataclass(frozen=True)
class LlavaJsonConfig:
    data_path: str | list
    image_root: str | None = None
    strip_prefixes: tuple[str, ...] = ()
    image_size: int = 336
    on_bad_record: OnBadRecord = "error"
    check_image_paths: bool = True
    allow_paths_outside_root: bool = False  # absolute / `..` image values are bad records unless true
    max_image_pixels: int | None = None  # pixel budget (None: FGCLIP_MAX_IMAGE_PIXELS or 50 MP; 0 = no limit)


@dataclass
class LlavaRecord:
    source: str
    index: int
    id: str
    image_path: Path | None
    conversations: list[dict]
    image_field: str = "image"


def parse_llava_record(
    raw: dict, source: str, index: int, config: LlavaJsonConfig, policy: BadRecordPolicy
) -> LlavaRecord | None:
    if "id" not in raw or raw["id"] is None:
        policy.reject(BadReason.MISSING_FIELD, source, index, "id", "field is missing")
        return None
    try:
        _, images = check_conversation(raw)
    except ConversationError as error:
        reason = BadReason.EMPTY_CAPTION if error.reason == "empty_answer" else BadReason.MISSING_FIELD
        policy.reject(reason, source, index, error.field, error.detail)
        return None
    if len(images) > 1:
        policy.reject(BadReason.MISSING_FIELD, source, index, "image", f"one image per record, got {len(images)}")
        return None
    image = images[0] if images else None
    path = None
    if image is not None:
        path = resolve_record_image(image, config, policy, source, index, "image")
        if path is None:
            return None
    conversations = [{"from": turn["from"], "value": turn["value"]} for turn in raw["conversations"]]
    return LlavaRecord(source, index, str(raw["id"]), path, conversations)


def make_llava_sample(record: LlavaRecord, pixels, rng=None) -> dict:
    return {
        "id": record.id,
        "conversations": record.conversations,
        "pixel_values": pixels,
        "has_image": record.image_path is not None,
        "record_id": f"{record.source} record {record.index}",
    }


class LlavaJsonDataset(ImageRecordDataset):
    """Map-style LLaVA reader, image-less records included; images decoded lazily with the skip fallback."""

    def __init__(self, config: LlavaJsonConfig, policy: BadRecordPolicy | None = None):
        policy = policy or BadRecordPolicy(config.on_bad_record)
        super().__init__(ImagePreprocessor(ImageConfig(size=config.image_size, max_pixels=config.max_image_pixels)),
                         policy)
        self.config = config
        for path in resolve_data_files(config.data_path):
            for index, raw in read_records(path, policy):
                record = parse_llava_record(raw, str(path), index, config, policy)
                if record is not None:
                    self.records.append(record)
        self._finalise()

    def __getitem__(self, index: int) -> dict:
        used, pixels = self._load_image(index)
        return make_llava_sample(self.records[used], pixels)
