"""Turn one LLaVA-JSON sample into `input_ids` / `labels` for HF LLaVA (real `<image>` id, expanded N-fold).

Sample format: `{"id": str, "image": str | [str, ...] (optional), "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", "value": ...}, ...]}`; turns alternate human/gpt and end with gpt.

Steps: check the conversation and the image/token counts (`fgclip_lmm.data.conversations`, the rules the
LLaVA-JSON reader applies too); move a turn's single `<image>` to the front as
`<image>\\n{text}` (LLaVA's `preprocess_multimodal`); render with the template; tokenise the whole string once
(`add_special_tokens=True`, exactly what `processor(text=...)` does at inference) with character offsets; label
the tokens overlapping the template's learned spans (everything else -100); expand every `<image>` id to
`image_seq_length` copies (labels -100); truncate to `model_max_length` without ever cutting an image block: a cut
inside a block moves to the block's start and drops that image and all later ones (`EncodedSample.num_images`
says how many images survive). Bad samples raise `SampleError` with a `reason` from `SAMPLE_ERROR_REASONS`, so a
dataset can count them as skips instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fgclip_lmm.constants import IMAGE_TOKEN
from fgclip_lmm.data.conversations import CONVERSATION_ERROR_REASONS, ConversationError, check_conversation
from fgclip_lmm.errors import FGClipError

from .templates import Template, get_template

IGNORE_INDEX = -100
SAMPLE_ERROR_REASONS = (
    *CONVERSATION_ERROR_REASONS,  # the conversation rules (`fgclip_lmm.data.conversations`)
    "too_long",  # the first image block (and the text before it) does not fit model_max_length
    "no_target",  # nothing left to learn after truncation
    "tokenization_mismatch",  # the tokenizer split <image> or merged an answer away
)


class SampleError(FGClipError, ValueError):
    """A sample that cannot be trained on; `reason` is one of `SAMPLE_ERROR_REASONS`."""

    def __init__(self, reason: str, sample_id: Any, message: str) -> None:
        if reason not in SAMPLE_ERROR_REASONS:
            raise ValueError(f"unknown SampleError reason {reason!r}; known: {', '.join(SAMPLE_ERROR_REASONS)}")
        super().__init__(f"sample {sample_id!r}: {message}")
        self.reason = reason
        self.sample_id = sample_id


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]
    num_images: int  # images whose blocks survived truncation (the first `num_images` of `image_files`)
    image_files: list[str]  # all images of the sample, in order
    truncated: bool


def image_first(text: str) -> str:
    """A turn's single `<image>` moved to the front as `<image>\\n{text}` (LLaVA's `preprocess_multimodal`)."""
    if text.count(IMAGE_TOKEN) == 1:
        return IMAGE_TOKEN + "\n" + text.replace(IMAGE_TOKEN, "").strip()
    return text


def encode_sample(
    sample: dict,
    tokenizer: Any,
    template: str | Template,
    image_seq_length: int,
    model_max_length: int,
    image_token: str = IMAGE_TOKEN,
) -> EncodedSample:
    """Encode one LLaVA-JSON sample; see the module docstring. Raises `SampleError` for bad samples."""
    tpl = get_template(template)
    sid = sample.get("id")
    try:
        turns, images = check_conversation(sample)
    except ConversationError as error:
        raise SampleError(error.reason, sid, str(error)) from None
    turns = [(role, image_first(text)) for role, text in turns]
    if image_token != IMAGE_TOKEN:
        turns = [(role, text.replace(IMAGE_TOKEN, image_token)) for role, text in turns]
    text, spans = tpl.render(turns, eos_token=tokenizer.eos_token or "")
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    if ids.count(image_id) != len(images):
        raise SampleError(
            "tokenization_mismatch", sid,
            f"{len(images)} {image_token!r} in the text but {ids.count(image_id)} id(s) {image_id} after tokenisation; "
            "the tokenizer must hold it as one special token (assemble adds it)",
        )
    labels = []
    for tok, (start, end) in zip(ids, offsets, strict=True):
        learned = tok != image_id and any(start < s_end and end > s_start for s_start, s_end in spans)
        labels.append(tok if learned else IGNORE_INDEX)
    for s_start, s_end in spans:
        if not any(start < s_end and end > s_start for start, end in offsets):
            raise SampleError("tokenization_mismatch", sid, f"no token covers the answer at chars {s_start}:{s_end}")
    return _expand_and_truncate(sid, ids, labels, image_id, images, image_seq_length, model_max_length)


def _expand_and_truncate(
    sid: Any, ids: list[int], labels: list[int], image_id: int, images: list[str], n_per_image: int, max_len: int
) -> EncodedSample:
    out_ids: list[int] = []
    out_labels: list[int] = []
    blocks: list[tuple[int, int]] = []
    for tok, lab in zip(ids, labels, strict=True):
        if tok == image_id:
            blocks.append((len(out_ids), len(out_ids) + n_per_image))
            out_ids.extend([image_id] * n_per_image)
            out_labels.extend([IGNORE_INDEX] * n_per_image)
        else:
            out_ids.append(tok)
            out_labels.append(lab)
    cut = min(len(out_ids), max_len)
    for start, end in blocks:
        if start < cut < end:
            cut = start
    kept = sum(1 for _, end in blocks if end <= cut)
    if blocks and kept == 0:
        raise SampleError(
            "too_long", sid,
            f"needs {blocks[0][1]} tokens up to the end of its first image ({n_per_image} image tokens) "
            f"but model_max_length is {max_len}",
        )
    out_ids, out_labels = out_ids[:cut], out_labels[:cut]
    if all(lab == IGNORE_INDEX for lab in out_labels):
        raise SampleError("no_target", sid, f"no answer token left within model_max_length={max_len}")
    return EncodedSample(out_ids, out_labels, kept, images, truncated=cut < len(ids) + len(blocks) * (n_per_image - 1))
