"""Yes/no answer handling for exact-match hallucination tasks (POPE, MME-style pairs, HallusionBench).

lmms-eval 0.7.3 scores POPE by exact match after `lower().strip()`, so a model that says "Yes." or "Yes, there is"
is scored wrong (docs/lmms_eval.md, "POPE and MME scoring"). LLaVA's own POPE evaluation instead parses the answer
(docs/llava.md, "Evaluation protocol"): keep the text before the first ".", drop commas, split on spaces, and call
it "no" when a word is "No", "no" or "not", otherwise "yes". `parse_yes_no` applies that rule (case-insensitively,
and ignoring punctuation glued to a word, so "NO!" and "Not" are "no"); `strict=True` returns None instead of "yes"
when no yes-word is present either.

`yes_no_token_ids` finds the vocabulary ids whose text starts a "yes" / "no" answer, for scoring P(yes) and P(no)
from the first generated step.
"""
from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Any

YES, NO = "yes", "no"
_NEGATIONS = frozenset({"no", "not"})
_AFFIRMATIONS = frozenset({"yes", "y"})
_STRIP = string.punctuation + "\u2019\u201c\u201d"
# Document columns that hold a yes/no ground truth in POPE, MME and HallusionBench-style data.
_TARGET_COLUMNS = ("answer", "gt_answer")


def _first_sentence_words(text: str) -> list[str]:
    first = text.split(".", 1)[0].replace(",", " ")
    return [word.strip(_STRIP).lower() for word in first.split()]


def parse_yes_no(text: str, strict: bool = False) -> str | None:
    """LLaVA's POPE parsing rule: "no" if the first sentence has the word no/not, else "yes".

    With `strict=True` an answer that has neither a negation nor the word "yes" gives None (so it can be counted
    as unparsed) instead of LLaVA's default "yes".
    """
    words = [w for w in _first_sentence_words(text) if w]
    if any(word in _NEGATIONS for word in words):
        return NO
    if strict and not any(word in _AFFIRMATIONS for word in words):
        return None
    return YES


def normalize_answer(text: str, strict: bool = False) -> str:
    """The bare "yes"/"no" that exact-match tasks expect (LLaVA rule); an empty answer stays empty.

    With `strict=True` an answer with neither yes nor no/not is returned unchanged (stripped), so exact-match
    scoring counts it wrong and POPE counts it as neither a yes nor a no.
    """
    if not text.strip():
        return ""
    parsed = parse_yes_no(text, strict=strict)
    return parsed if parsed is not None else text.strip()


def is_yes_no_doc(doc: Mapping[str, Any] | None) -> bool:
    """True when the document's ground truth is a yes/no answer (POPE `answer`, MME `Yes`/`No`)."""
    if not doc:
        return False
    for column in _TARGET_COLUMNS:
        value = doc.get(column)
        if isinstance(value, str) and value.strip().lower().rstrip(".") in (YES, NO):
            return True
    return False


def is_yes_no_task(task_name: str, yes_no_tasks: Iterable[str]) -> bool:
    """True when `task_name` starts with one of the configured yes/no task prefixes."""
    return any(task_name.startswith(prefix) for prefix in yes_no_tasks)


def yes_no_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Ids of the first token of "Yes"/"yes"/"YES" and "No"/"no"/"NO" whose text starts the answer word.

    A first token that is only a word-boundary marker (Llama's "▁") or a shared prefix is skipped, so the two
    sets never overlap. Raises ValueError when the tokenizer has no such token for either answer.
    """
    found: dict[str, set[int]] = {YES: set(), NO: set()}
    for word in (YES, NO):
        for form in (word.capitalize(), word, word.upper()):
            ids = tokenizer.encode(form, add_special_tokens=False)
            if not ids:
                continue
            piece = tokenizer.decode(ids[:1]).strip().lower()
            if piece and word.startswith(piece):
                found[word].add(ids[0])
    shared = found[YES] & found[NO]
    yes_ids, no_ids = sorted(found[YES] - shared), sorted(found[NO] - shared)
    if not yes_ids or not no_ids:
        raise ValueError(
            "cannot score P(yes)/P(no): the tokenizer has no first token that starts "
            f"{'yes' if not yes_ids else 'no'} without also starting the other answer"
        )
    return yes_ids, no_ids
