"""Turn one LLaVA-JSON sample into `input_ids` / `labels` for HF LLaVA (real `<image>` id, expanded N-fold).

Sample format: `{"id": str, "image": str | [str, ...] (optional), "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", "value": ...}, ...]}`; turns alternate human/gpt and end with gpt.

Steps: validate the turns and the image/token counts; move a turn's single `<image>` to the front as
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

from fgclip_lmm.errors import FGClipError

from .templates import IMAGE_TOKEN, Template, get_template

IGNORE_INDEX = -100
SAMPLE_ERROR_REASONS = (
    "bad_conversation",  # malformed turns (roles, order, types)
    "image_without_token",  # an image is given but no turn has <image>
    "token_without_image",  # <image> in the text but no image given
    "image_count_mismatch",  # more (or fewer) <image> tokens than images
    "too_long",  # the first image block (and the text before it) does not fit model_max_length
    "no_target",  # nothing left to learn after truncation
    "tokenization_mismatch",  # the tokenizer split <image> or merged an answer away
)
_ROLES = {"human": "user", "gpt": "assistant"}


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


def sample_images(sample: dict) -> list[str]:
    """The sample's image paths: `image` may be absent/None/"" (text-only), a string, or a list of strings."""
    image = sample.get("image")
    if image is None or image == "":
        return []
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and all(isinstance(x, str) and x for x in image):
        return list(image)
    raise SampleError("bad_conversation", sample.get("id"), f"'image' must be a path or a list of paths, got {image!r}")


def sample_turns(sample: dict) -> list[tuple[str, str]]:
    """Validated `[(user|assistant, text), ...]` with single-image turns normalised to `<image>\\n{text}`."""
    sid = sample.get("id")
    convs = sample.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise SampleError("bad_conversation", sid, "'conversations' must be a non-empty list")
    turns = []
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict) or turn.get("from") not in _ROLES or not isinstance(turn.get("value"), str):
            raise SampleError("bad_conversation", sid, f"conversations[{i}] must be {{'from': human|gpt, 'value': str}}, got {turn!r}")
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise SampleError("bad_conversation", sid, f"conversations[{i}].from={turn['from']!r}, expected {expected!r}")
        value = turn["value"]
        if turn["from"] == "gpt" and IMAGE_TOKEN in value:
            raise SampleError("bad_conversation", sid, f"conversations[{i}] is a gpt turn containing {IMAGE_TOKEN!r}")
        if value.count(IMAGE_TOKEN) == 1:
            value = IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").strip()
        turns.append((_ROLES[turn["from"]], value))
    if len(turns) % 2:
        raise SampleError("bad_conversation", sid, f"{len(turns)} turns: a conversation must end with a gpt turn")
    return turns


def check_image_tokens(sample_id: Any, n_tokens: int, n_images: int) -> None:
    if n_images and not n_tokens:
        raise SampleError("image_without_token", sample_id, f"{n_images} image(s) given but no {IMAGE_TOKEN!r} in any turn")
    if n_tokens and not n_images:
        raise SampleError("token_without_image", sample_id, f"{n_tokens} {IMAGE_TOKEN!r} token(s) but no image given")
    if n_tokens != n_images:
        more = "more" if n_tokens > n_images else "fewer"
        raise SampleError(
            "image_count_mismatch", sample_id, f"{more} {IMAGE_TOKEN!r} tokens ({n_tokens}) than images ({n_images})"
        )


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
    images = sample_images(sample)
    turns = sample_turns(sample)
    n_tokens = sum(text.count(IMAGE_TOKEN) for role, text in turns if role == "user")
    check_image_tokens(sid, n_tokens, len(images))
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
    for tok, (start, end) in zip(ids, offsets):
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
    for tok, lab in zip(ids, labels):
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
