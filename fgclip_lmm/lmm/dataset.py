"""LMM training samples and batches: records from the [data] LLaVA reader, pixels from the LMM's own processor,
tokens and labels from `encode.encode_sample`, and the padding collator.

Dummy-image convention (every rank runs the tower and the projector on every micro-batch, so ZeRO-3 never
hangs on a text-only batch): a text-only sample carries one all-zero image (`dummy_pixel_values`, i.e. the
normalised zero tensor of the processor's output size) with `image_mask = [False]`; an image sample carries its
images with `image_mask = [True, ...]`. The collator concatenates them (`pixel_values (M,3,H,W)`, `image_mask (M,)`)
in sample order, which is the order of the `<image>` blocks in `input_ids`, and `forward.lmm_forward` splices only
the real images' features while keeping the dummies in the autograd graph with weight zero.

Pixels come from the assembled processor's `LlavaImageProcessor`, so training and evaluation preprocess images
identically (aspect mode included). Bad records follow the reader's `on_bad_record` policy; under `skip`, samples
that fail encoding (too long, nothing to learn, tokenisation mismatch) are counted per reason in `skipped` and
replaced by the next good index, as the reader does for unreadable images. Samples cut at `model_max_length`
(an answer or later turns lost) are counted once each in `truncated`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from fgclip_lmm.data.bad_records import SharedCounts
from fgclip_lmm.data.images import load_rgb
from fgclip_lmm.data.llava_json import LlavaJsonDataset
from fgclip_lmm.errors import FGClipError

from .encode import IGNORE_INDEX, SAMPLE_ERROR_REASONS, SampleError, encode_sample
from .templates import Template, get_template

PADDING_SIDES = ("right", "left")


class NoUsableSampleError(FGClipError, ValueError):
    """Every sample failed encoding under `on_bad_record: skip` (e.g. all longer than `model_max_length`)."""


class ProcessorImageLoader:
    """`load(path) -> (3,H,W)` through an HF image processor; plugs into the [data] readers' `preprocessor` slot."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, image: Any) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def load(self, source: str | os.PathLike | bytes) -> torch.Tensor:
        return self(load_rgb(source))


def processor_image_shape(processor: Any) -> tuple[int, int, int]:
    """(3, H, W) of the processor's output, measured on a small non-square image."""
    from PIL import Image

    probe = Image.new("RGB", (7, 5), (128, 128, 128))
    return tuple(processor.image_processor(images=probe, return_tensors="pt")["pixel_values"].shape[1:])


def image_seq_length(processor: Any) -> int:
    """Tokens per image under HF `LlavaProcessor`'s rule: (H//p)·(W//p) + additional − (1 if `default`)."""
    _, height, width = processor_image_shape(processor)
    count = (height // processor.patch_size) * (width // processor.patch_size) + processor.num_additional_image_tokens
    return count - 1 if processor.vision_feature_select_strategy == "default" else count


def dummy_pixel_values(processor: Any) -> torch.Tensor:
    """The stand-in image of a text-only sample: zeros of the processor's output shape, `(1, 3, H, W)`."""
    return torch.zeros(1, *processor_image_shape(processor))


def estimated_length(conversations: list[dict], has_image: bool, tokens_per_image: int) -> int:
    """LLaVA's cheap length for grouping: whitespace words, plus the image tokens of an image sample."""
    words = sum(len(turn["value"].split()) for turn in conversations)
    return max(1, words + (tokens_per_image if has_image else 0))


class LmmSupervisedDataset(Dataset):
    """`reader[i]` -> `{input_ids, labels, pixel_values (k,3,H,W), image_mask (k,), id}` with k >= 1."""

    def __init__(
        self, reader: LlavaJsonDataset, processor: Any, template: str | Template, model_max_length: int
    ) -> None:
        self.reader = reader
        self.processor = processor
        self.template = get_template(template)
        self.model_max_length = int(model_max_length)
        self.tokens_per_image = image_seq_length(processor)
        self.image_token = processor.image_token
        reader.preprocessor = ProcessorImageLoader(processor.image_processor)
        self._dummy = dummy_pixel_values(processor)
        self._bad = torch.zeros(len(reader), dtype=torch.bool).share_memory_()
        self._skipped = SharedCounts(SAMPLE_ERROR_REASONS)
        self._cut = torch.zeros(len(reader), dtype=torch.bool).share_memory_()  # samples seen truncated

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped at encoding time, per `SampleError.reason` (each counted once)."""
        return self._skipped.as_dict()

    @property
    def truncated(self) -> dict[str, int]:
        """Samples (each counted once) whose conversation was cut at `model_max_length`."""
        count = int(self._cut.sum())
        return {"conversations": count} if count else {}

    @property
    def lengths(self) -> list[int]:
        return [estimated_length(r.conversations, r.image_path is not None,
                                 self.tokens_per_image) for r in self.reader.records]

    @property
    def modality_lengths(self) -> list[int]:
        """Positive for image samples, negative for text-only ones (LLaVA's `group_by_modality_length` input)."""
        return [n if r.image_path is not None else -n for n, r in zip(self.lengths, self.reader.records, strict=True)]

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        for step in range(n):
            candidate = (index + step) % n
            if self._bad[candidate]:
                continue
            raw = self.reader[candidate]
            try:
                sample, truncated = self._encode(raw)
            except SampleError as error:
                if self.reader.policy.on_bad_record == "error":
                    raise
                self._bad[candidate] = True
                self._skipped.add(error.reason)
                continue
            if truncated:
                self._cut[candidate] = True
            return sample
        raise NoUsableSampleError(f"LmmSupervisedDataset: none of the {n} samples can be encoded "
                                  f"(skipped: {self.skipped})")

    def _encode(self, raw: dict) -> tuple[dict, bool]:
        pixels = raw["pixel_values"]
        sample = {"id": raw["id"], "conversations": raw["conversations"],
                  "image": "image" if raw["has_image"] else None}
        enc = encode_sample(sample, self.processor.tokenizer, self.template, self.tokens_per_image,
                            self.model_max_length, image_token=self.image_token)
        if enc.num_images:
            stacked = pixels.unsqueeze(0) if pixels.dim() == 3 else pixels
            pixel_values, image_mask = stacked[: enc.num_images], torch.ones(enc.num_images, dtype=torch.bool)
        else:
            pixel_values, image_mask = self._dummy.clone(), torch.zeros(1, dtype=torch.bool)
        return {
            "id": raw["id"],
            "input_ids": torch.tensor(enc.input_ids, dtype=torch.long),
            "labels": torch.tensor(enc.labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "image_mask": image_mask,
        }, enc.truncated


def pad_tokens(rows: list[tuple], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """(input_ids, labels) per sample -> padded `input_ids` (pad id), `labels` (-100) and `attention_mask`."""
    longest = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for row, (ids, lab) in enumerate(rows):
        n = len(ids)
        span = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
        input_ids[row, span] = torch.as_tensor(ids)
        labels[row, span] = torch.as_tensor(lab)
        attention_mask[row, span] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


@dataclass
class LmmCollator:
    """Pad to the longest sample: ids with `pad_token_id`, labels with -100, `attention_mask` 0 on padding.

    `padding_side` is `right` for training and `left` for batched generation. Images (dummies included) are
    concatenated in sample order.
    """

    pad_token_id: int
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"LmmCollator.padding_side={self.padding_side!r}; known: {', '.join(PADDING_SIDES)}")
        if self.pad_token_id is None:
            raise ValueError("LmmCollator.pad_token_id is None: the tokenizer needs a pad token (assemble adds one)")

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("LmmCollator got an empty batch")
        return {
            **pad_tokens([(s["input_ids"], s["labels"]) for s in samples], self.pad_token_id, self.padding_side),
            "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
            "image_mask": torch.cat([s["image_mask"] for s in samples]),
        }
