"""Turning lmms-eval request tuples into prompts, image lists and generation settings for `FGClipLlava`.

Simple models receive `(context, gen_kwargs, doc_to_visual, doc_id, task, split)` for `generate_until` and
`(context, continuation, doc_to_visual, doc_id, task, split)` for `loglikelihood` (docs/lmms_eval.md, "Request
tuples"). The prompt is built the way lmms-eval's `llava_hf` simple path builds it (docs/lmms_eval.md, "Request
tuples"): one "<image>" per visual in front of the context unless the context already places them, a single user
turn, and the tokenizer's chat template (the project tokenizers carry the Vicuna-v1 template used in training).

Images are decoded the way training decodes them (`fgclip_lmm.data.images.to_rgb`: EXIF orientation applied,
transparency composited on white): `rgb_doc` converts a document's images before the task's `doc_to_visual`
sees them (lmms-eval's own `doc_to_visual` functions call `.convert("RGB")`, which would paint transparent
areas black), and `flatten_visuals` converts whatever `doc_to_visual` returns.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from fgclip_lmm.data.images import to_rgb

DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class RequestGenerationConfig:
    """The `gen_kwargs` of one request, resolved: greedy unless temperature > 0 (lmms-eval's convention)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    until: tuple[str, ...] = ()

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    @classmethod
    def from_gen_kwargs(cls, gen_kwargs: dict[str, Any] | None, default_max_new_tokens: int) -> RequestGenerationConfig:
        gen = dict(gen_kwargs or {})
        until = gen.get("until") or ()
        if isinstance(until, str):
            until = (until,)
        elif not isinstance(until, (list, tuple)) or not all(isinstance(u, str) for u in until):
            raise ValueError(f"gen_kwargs['until'] must be a string or a list of strings, got {until!r}")
        max_new = int(gen.get("max_new_tokens", default_max_new_tokens))
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
        temperature = float(gen.get("temperature") or 0.0)
        top_p = gen.get("top_p")
        top_p = float(top_p) if top_p is not None and 0 < float(top_p) < 1 else None
        return cls(max_new, temperature, top_p, int(gen.get("num_beams") or 1), tuple(u for u in until if u))

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate` (sampling knobs only when sampling)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                  "num_beams": self.num_beams}
        if self.do_sample:
            kwargs["temperature"] = self.temperature
            kwargs["top_p"] = self.top_p if self.top_p is not None else 1.0
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def truncate(self, text: str) -> str:
        """Cut the generated text at the first stop string (lmms-eval's `until`)."""
        for stop in self.until:
            text = text.split(stop, 1)[0]
        return text

    def group_key(self) -> str:
        return json.dumps([self.max_new_tokens, self.temperature, self.top_p, self.num_beams, list(self.until)])


@dataclass
class PreparedRequest:
    """One request, ready to batch: its chat-formatted prompt, image keys and how to reload its images."""

    index: int
    task: str
    split: str
    doc_id: int
    prompt: str
    image_keys: list[str]
    load_images: Callable[[], list[Image.Image]]
    settings: RequestGenerationConfig = field(default_factory=RequestGenerationConfig)
    yes_no: bool = False
    continuation: str = ""


def flatten_visuals(visuals: Any, where: str) -> list[Image.Image]:
    """`doc_to_visual` output as a flat list of RGB PIL images; videos/audio are rejected clearly."""
    flat: list[Any] = []
    stack = [visuals] if not isinstance(visuals, (list, tuple)) else list(visuals)
    for item in stack:
        if isinstance(item, (list, tuple)):
            flat.extend(item)
        elif item is not None:
            flat.append(item)
    images = []
    for item in flat:
        if not isinstance(item, Image.Image):
            raise TypeError(f"fgclip_llava takes images only; {where} gave a {type(item).__name__} visual")
        images.append(item if _is_plain_rgb(item) else to_rgb(item))
    return images


def _is_plain_rgb(image: Image.Image) -> bool:
    """RGB without an EXIF rotation: nothing for `to_rgb` to do (skips a pixel copy per visual)."""
    return image.mode == "RGB" and image.getexif().get(0x0112, 1) == 1


def rgb_doc(doc: Any) -> Any:
    """A shallow copy of an lmms-eval document with every PIL image (or list of them) decoded by `to_rgb`."""
    if not isinstance(doc, dict):
        return doc
    out = dict(doc)
    for key, value in doc.items():
        if isinstance(value, Image.Image) and not _is_plain_rgb(value):
            out[key] = to_rgb(value)
        elif isinstance(value, list) and any(isinstance(v, Image.Image) for v in value):
            out[key] = [to_rgb(v) if isinstance(v, Image.Image) and not _is_plain_rgb(v) else v for v in value]
    return out


def build_prompt(context: str, n_images: int, tokenizer: Any, image_token: str, chat_template: str) -> str:
    """The generation prompt: image placeholders + context in one user turn, rendered by the chat template."""
    placed = context.count(image_token)
    if placed == 0 and n_images:
        context = " ".join([image_token] * n_images) + "\n" + context
    elif placed != n_images:
        raise ValueError(f"the context places {placed} {image_token} tokens but the document has {n_images} images")
    messages = [{"role": "user", "content": context}]
    return tokenizer.apply_chat_template(
        messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True
    )


def expand_image_tokens(prompt: str, image_token: str, tokens_per_image: Sequence[int]) -> str:
    """Repeat each image placeholder as many times as its image has feature rows (what `LlavaProcessor` does)."""
    parts = prompt.split(image_token)
    if len(parts) - 1 != len(tokens_per_image):
        raise ValueError(f"prompt has {len(parts) - 1} image tokens for {len(tokens_per_image)} images")
    out = [parts[0]]
    for count, tail in zip(tokens_per_image, parts[1:], strict=True):
        out.append(image_token * count)
        out.append(tail)
    return "".join(out)
