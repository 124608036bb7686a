"""Region phrases from a long caption: a small rule-based noun-phrase chunker, or an LLM's list checked against it.

The chunker (no spaCy) looks for attribute words of the lexicon (`fgclip_lmm.datagen.lexicon`: colour, shade, size,
height, material, pattern, count, state) or digits, possibly joined by "and" / ",", followed by one or two noun
candidates (any word that is not a function word, frequent verb, adverb or lexicon word):

    "In the corner there is a large cyan hexagon with stripes."
      short_expr "large cyan hexagon"   (modifiers + noun)
      long_expr  "a large cyan hexagon with stripes"  (+ determiner, + one prepositional phrase with content)

Requiring at least one attribute keeps the phrases that hard negatives can perturb. A phrase whose noun and
modifiers are a subset of an earlier or later phrase ("cyan hexagon" vs "large cyan hexagon") is dropped, so one
object gets one query. `llm_phrases` accepts an LLM's list only where each phrase occurs verbatim in the caption.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from fgclip_lmm.datagen.lexicon import LEXICON, is_noun_candidate, singularize

_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+|[^\sA-Za-z\d]")
DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "its", "his", "her", "their", "some",
                         "several", "many"})
PREPOSITIONS = frozenset({"with", "in", "on", "of", "under", "near", "beside", "behind", "wearing", "holding", "made"})
MAX_NOUN_WORDS = 2
MAX_PREP_WORDS = 5


@dataclass(frozen=True)
class Phrase:
    short: str  # modifiers + head noun, lower case
    long: str  # determiner + short + one prepositional phrase, lower case
    noun: str  # head noun, lower case
    modifiers: tuple[str, ...]  # lexicon words / digits, lower case

    @property
    def key(self) -> tuple[str, frozenset[str]]:
        return singularize(self.noun), frozenset(self.modifiers)


def _tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _is_modifier(word: str) -> bool:
    low = word.lower()
    return low in LEXICON or low.isdigit()


def _modifier_run(toks: list, i: int) -> tuple[list[int], int]:
    """Indices of modifier words starting at `i` (joined by 'and' or ','), and the index after the run."""
    mods, j = [], i
    while j < len(toks):
        word = toks[j][0]
        if _is_modifier(word):
            mods.append(j)
            j += 1
        elif mods and word.lower() in ("and", ",") and j + 1 < len(toks) and _is_modifier(toks[j + 1][0]):
            j += 1
        else:
            break
    return mods, j


def _noun_run(toks: list, j: int) -> int:
    """Index after up to MAX_NOUN_WORDS noun candidates from `j`; a second word may not look like a participle."""
    k = j
    while k < len(toks) and k - j < MAX_NOUN_WORDS and is_noun_candidate(toks[k][0]):
        if k > j and toks[k][0].lower().endswith(("ed", "ing")):
            break
        k += 1
    return k


def _prep_phrase_end(toks: list, k: int) -> int:
    """End index of a prepositional phrase at `k` that holds at least one content word, else `k`."""
    if k >= len(toks) or toks[k][0].lower() not in PREPOSITIONS:
        return k
    m = k + 1
    if m < len(toks) and toks[m][0].lower() == "of":  # "made of"
        m += 1
    if m < len(toks) and toks[m][0].lower() in DETERMINERS:
        m += 1
    _, after_mods = _modifier_run(toks, m)
    end = _noun_run(toks, after_mods)
    made_of = toks[k][0].lower() == "made" and end == after_mods > m  # "made of glass": the material is the content
    if (end == after_mods and not made_of) or not _is_boundary(toks, end) or end - k > MAX_PREP_WORDS + 1:
        return k
    return end


def _is_boundary(toks: list, k: int) -> bool:
    """True at the end, at punctuation, or at a word that cannot continue a noun phrase."""
    if k >= len(toks):
        return True
    word = toks[k][0]
    return not word[0].isalnum() or not (is_noun_candidate(word) or _is_modifier(word))


def _span(text: str, toks: list, a: int, b: int) -> str:
    return " ".join(text[toks[a][1]:toks[b - 1][2]].lower().split())


def chunk_phrases(caption: str, max_phrases: int = 10, min_modifiers: int = 1) -> list[Phrase]:
    """Attribute noun phrases of `caption` in order of first mention, deduplicated and subsumption-pruned."""
    toks = _tokens(caption)
    found: list[Phrase] = []
    i = 0
    while i < len(toks):
        mods, j = _modifier_run(toks, i)
        k = _noun_run(toks, j) if mods else j
        if len(mods) < max(min_modifiers, 1) or k == j:
            i = max(i + 1, j)
            continue
        start = i - 1 if i > 0 and toks[i - 1][0].lower() in DETERMINERS else i
        long_end = _prep_phrase_end(toks, k)
        found.append(Phrase(short=_span(caption, toks, i, k), long=_span(caption, toks, start, long_end),
                            noun=toks[k - 1][0].lower(), modifiers=tuple(toks[m][0].lower() for m in mods)))
        i = k
    return prune(found)[:max_phrases]


def prune(phrases: list[Phrase]) -> list[Phrase]:
    """Drop repeats of a short phrase and phrases whose modifiers are a strict subset of another's (same noun)."""
    seen: set[str] = set()
    unique = []
    for phrase in phrases:
        if phrase.short not in seen:
            seen.add(phrase.short)
            unique.append(phrase)
    return [p for p in unique
            if not any(q is not p and q.key[0] == p.key[0] and p.key[1] < q.key[1] for q in unique)]


def head_noun(phrase: str) -> str | None:
    """The head noun of a region phrase: the last noun candidate before the first preposition after a noun."""
    head = None
    for word, _, _ in _tokens(phrase):
        low = word.lower()
        if head is not None and (low in PREPOSITIONS or not word[0].isalnum()):
            break
        if is_noun_candidate(word):
            head = low
    return head


def llm_phrases(caption: str, reply: str, max_phrases: int = 10) -> list[Phrase]:
    """Phrases listed by an LLM (one per line), kept only where they occur verbatim in `caption` and hold a noun."""
    toks = _tokens(caption)
    lowered = [t[0].lower() for t in toks]
    found = []
    for line in reply.splitlines():
        words = [w.lower() for w, _, _ in _tokens(_strip_list_marker(line)) if w[0].isalnum()]
        while words and words[0] in DETERMINERS:  # "the red car" -> short "red car"; long re-adds the determiner
            words = words[1:]
        if not words:
            continue
        at = next((s for s in range(len(lowered) - len(words) + 1) if lowered[s:s + len(words)] == words), None)
        noun = head_noun(" ".join(words))
        if at is None or noun is None:
            continue
        end = at + len(words)
        start = at - 1 if at > 0 and lowered[at - 1] in DETERMINERS else at
        found.append(Phrase(short=" ".join(words), long=_span(caption, toks, start, _prep_phrase_end(toks, end)),
                            noun=noun, modifiers=tuple(w for w in words if _is_modifier(w))))
    return prune(found)[:max_phrases]


def _strip_list_marker(line: str) -> str:
    return re.sub(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s*", "", line).strip().strip("\"'").rstrip(".;,")
