"""Clean-up and degenerate-output detection for generated captions.

`clean_caption` strips chat-role echoes, surrounding quotes and extra whitespace, and cuts a reply that stops
mid-sentence (it hit `max_new_tokens`) back to its last complete sentence. `degenerate_reason` returns why a
text must not be written as a caption, or None when it is acceptable:

* `empty`: nothing left after cleaning;
* `too_short`: fewer than `min_words` words;
* `not_text`: control / replacement characters, or under `min_letter_ratio` letters among non-space characters
  (random models and broken decoders produce byte soup);
* `repetition`: one word is more than `max_word_share` of the words, or fewer than `min_distinct_trigrams` of the
  word trigrams are distinct (generation loops such as "a red car a red car a red car").
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_ROLE_PREFIX = re.compile(r"^\s*(?:assistant|gpt|answer|caption|description)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*|\d+")
# Frequent English words excluded from the word-share test ("the" is often 8-10 % of a long caption).
_COMMON = frozenset({"a", "an", "the", "and", "of", "in", "on", "with", "is", "are", "to", "at", "its", "it", "there",
                     "this"})


@dataclass(frozen=True)
class TextQuality:
    min_words: int = 8
    min_letter_ratio: float = 0.75
    max_word_share: float = 0.3
    min_distinct_trigrams: float = 0.6
    min_words_for_repetition: int = 8


def clean_caption(text: str, first_line_only: bool = False) -> str:
    text = _ROLE_PREFIX.sub("", text.strip())
    if first_line_only:
        text = next((line for line in text.splitlines() if line.strip()), "")
    text = " ".join(text.split()).strip().strip("\"'`").strip()
    if text and text[-1] not in ".!?\"'":
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        if ends:  # drop the unfinished last sentence
            text = text[: ends[-1]]
    return text


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def degenerate_reason(text: str, quality: TextQuality) -> str | None:
    if not text.strip():
        return "empty"
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co") or ch == "\ufffd" for ch in text if ch not in "\n\t"):
        return "not_text"
    visible = [ch for ch in text if not ch.isspace()]
    if sum(ch.isalpha() for ch in visible) < quality.min_letter_ratio * len(visible):
        return "not_text"
    tokens = words(text)
    if len(tokens) < quality.min_words:
        return "too_short"
    if len(tokens) >= quality.min_words_for_repetition:
        content = [t for t in tokens if t not in _COMMON]
        if content and Counter(content).most_common(1)[0][1] > quality.max_word_share * len(tokens):
            return "repetition"
        trigrams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
        if len(set(trigrams)) < quality.min_distinct_trigrams * len(trigrams):
            return "repetition"
    return None
