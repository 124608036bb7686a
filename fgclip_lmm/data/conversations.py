"""LLaVA conversation rules, defined once: the LLaVA-JSON reader applies them per record (through the bad-record
policy) and the LMM encoder per sample (as `SampleError`), so both accept and reject the same data.

A conversation is a non-empty list of turns `{"from": "human" | "gpt", "value": str}` that alternate human / gpt,
start with human and end with gpt; a gpt turn holds no `<image>` and is not empty. `image` is absent, None or ""
(a text-only record), a path, or a list of paths; the `<image>` placeholders of the human turns number exactly
as many as the images (docs/llava.md, "Training data").
"""
from __future__ import annotations

from typing import Any

from fgclip_lmm.constants import IMAGE_TOKEN
from fgclip_lmm.errors import FGClipError

ROLES = {"human": "user", "gpt": "assistant"}  # LLaVA JSON roles -> chat-template roles
CONVERSATION_ERROR_REASONS = (
    "bad_conversation",  # malformed turns (types, roles, order) or a bad `image` field
    "empty_answer",  # a gpt turn with no text
    "image_without_token",  # an image is given but no turn has <image>
    "token_without_image",  # <image> in the text but no image given
    "image_count_mismatch",  # more (or fewer) <image> tokens than images
)


class ConversationError(FGClipError, ValueError):
    """A conversation that breaks the rules: `reason` (one of `CONVERSATION_ERROR_REASONS`), `field`, `detail`."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        if reason not in CONVERSATION_ERROR_REASONS:
            raise ValueError(f"unknown reason {reason!r}; known: {', '.join(CONVERSATION_ERROR_REASONS)}")
        super().__init__(f"{field}: {detail}")
        self.reason, self.field, self.detail = reason, field, detail


def conversation_turns(conversations: Any) -> list[tuple[str, str]]:
    """Checked `[(user | assistant, value), ...]` of a LLaVA `conversations` list (values as written)."""
    if not isinstance(conversations, list) or not conversations:
        raise ConversationError("bad_conversation", "conversations", "expected a non-empty list of turns")
    turns = []
    for i, turn in enumerate(conversations):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise ConversationError("bad_conversation", field,
                                    f"must be {{'from': human|gpt, 'value': str}}, got {turn!r}")
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise ConversationError("bad_conversation", f"{field}.from",
                                    f"{turn['from']!r}, expected {expected!r} (turns alternate human/gpt)")
        value = turn["value"]
        if expected == "gpt" and IMAGE_TOKEN in value:
            raise ConversationError("bad_conversation", f"{field}.value", f"a gpt turn containing {IMAGE_TOKEN!r}")
        if expected == "gpt" and not value.strip():
            raise ConversationError("empty_answer", f"{field}.value", "the answer is empty")
        turns.append((ROLES[turn["from"]], value))
    if len(turns) % 2:
        raise ConversationError("bad_conversation", "conversations",
                                f"{len(turns)} turns: a conversation must end with a gpt turn")
    return turns


def image_paths(image: Any) -> list[str]:
    """The record's image paths: `image` absent / None / "" (text-only), a path, or a list of paths."""
    if image is None or image == "":
        return []
    if isinstance(image, str) and image.strip():
        return [image]
    if isinstance(image, list) and all(isinstance(x, str) and x.strip() for x in image):
        return list(image)
    raise ConversationError("bad_conversation", "image", f"expected a path or a list of paths, got {image!r}")


def check_image_tokens(n_tokens: int, n_images: int) -> None:
    """The `<image>` placeholders of the conversation must match the images one to one."""
    if n_images and not n_tokens:
        raise ConversationError("image_without_token", "conversations",
                                f"{n_images} image(s) given but no {IMAGE_TOKEN!r} in any turn")
    if n_tokens and not n_images:
        raise ConversationError("token_without_image", "conversations",
                                f"{n_tokens} {IMAGE_TOKEN!r} token(s) but no image given")
    if n_tokens != n_images:
        more = "more" if n_tokens > n_images else "fewer"
        raise ConversationError("image_count_mismatch", "conversations",
                                f"{more} {IMAGE_TOKEN!r} tokens ({n_tokens}) than images ({n_images})")


def check_conversation(record: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """(turns, image paths) of a LLaVA record after every rule above; raises `ConversationError`."""
    turns = conversation_turns(record.get("conversations"))
    images = image_paths(record.get("image"))
    check_image_tokens(sum(text.count(IMAGE_TOKEN) for role, text in turns if role == "user"), len(images))
    return turns, images
