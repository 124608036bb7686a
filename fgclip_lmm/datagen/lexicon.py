"""The attribute lexicon shared by the phrase chunker and the rule-based hard negatives.

An attribute *category* (colour, shade, size, height, material, pattern, count, state) holds one or more *axes*; an
axis is an ordered tuple of *synonym groups*. A negative replaces a word by a word of another group of the same
axis: "red" -> "blue" (colour), "open" -> "closed" (state axis open/closed), never "large" -> "big" (same group)
nor "open" -> "wet" (another axis). The first word of a group is its canonical form, used as the replacement and for
synonym-aware comparison (`canonical_words`).

Also here: the function words and frequent caption verbs the chunker treats as phrase boundaries, and simple
English plural rules used when a count swap changes grammatical number ("one cup" -> "two cups").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

Axis = tuple[tuple[str, ...], ...]

CATEGORIES: dict[str, tuple[Axis, ...]] = {
    "colour": ((
        ("red",), ("orange",), ("yellow",), ("green",), ("blue",), ("purple", "violet"), ("pink",), ("brown",),
        ("black",), ("white",), ("gray", "grey"), ("cyan", "turquoise", "teal"), ("beige", "tan", "cream"),
        ("gold", "golden"), ("silver",), ("maroon",), ("navy",),
    ),),
    "shade": ((("light", "pale"), ("dark",), ("bright", "vivid")),),
    "size": ((("small", "little", "tiny"), ("medium", "medium-sized", "mid-sized"),
              ("large", "big", "huge", "giant")),),
    "height": ((("tall",), ("short",)),),
    "material": ((
        ("wooden", "wood"), ("metal", "metallic", "steel"), ("plastic",), ("glass",), ("leather",), ("stone",),
        ("ceramic", "porcelain"), ("paper", "cardboard"), ("fabric", "cloth", "cotton"), ("concrete", "cement"),
        ("brick",), ("rubber",), ("wicker",), ("woolen", "wool", "knitted"),
    ),),
    "pattern": ((
        ("striped", "stripy"), ("dotted", "polka-dot", "spotted"), ("checkered", "checked", "plaid"), ("floral",),
        ("plain", "solid"), ("zigzag",),
    ),),
    "count": ((
        ("one", "single"), ("two",), ("three",), ("four",), ("five",), ("six",), ("seven",), ("eight",), ("nine",),
        ("ten",),
    ),),
    "state": (
        (("open",), ("closed", "shut")),
        (("empty",), ("full", "filled")),
        (("wet",), ("dry",)),
        (("clean",), ("dirty",)),
        (("new",), ("old",)),
        (("lit",), ("unlit",)),
        (("standing",), ("sitting", "seated"), ("lying",)),
        (("broken",), ("intact",)),
        (("folded",), ("unfolded",)),
        (("sliced",), ("whole",)),
        (("parked",), ("moving",)),
        (("smiling",), ("frowning",)),
    ),
}
CATEGORY_ORDER: tuple[str, ...] = tuple(CATEGORIES)


@dataclass(frozen=True)
class Slot:
    """Where a lexicon word sits: its category, axis and synonym group (indices into `CATEGORIES`)."""

    category: str
    axis: int
    group: int

    def alternatives(self) -> list[str]:
        """Canonical words of the other groups of this axis, starting after the word's own group (cyclic)."""
        groups = CATEGORIES[self.category][self.axis]
        n = len(groups)
        return [groups[(self.group + step) % n][0] for step in range(1, n)]

    def canonical(self) -> str:
        return CATEGORIES[self.category][self.axis][self.group][0]


def _index() -> dict[str, Slot]:
    index: dict[str, Slot] = {}
    for category, axes in CATEGORIES.items():
        for a, axis in enumerate(axes):
            for g, group in enumerate(axis):
                for word in group:
                    if word in index:
                        raise ValueError(f"lexicon word {word!r} is in both {index[word]} and {category}")
                    index[word] = Slot(category, a, g)
    return index


LEXICON: dict[str, Slot] = _index()


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


COUNT_ONE = "one"

# Words that end a noun phrase or can never be its head.
FUNCTION_WORDS: frozenset[str] = _word_set("""
a an the this that these those there here it its it's they them their he she him her his we our you your i my me
and or but nor so yet if then than as of in on at by for from to into onto over under above below behind beside
besides between among around near next with without within along across through toward towards against upon about
up down off out via while which who whom whose what where when why how all any both each every few more most other
some such no not only own same very too also just can will would should could may might must shall do does did
done has have had having is are was were be been being am appears appear seems seem looks look shows show shown
showing depicts depict depicting features feature featuring contains contain containing includes include including
image picture photo photograph scene view background foreground left right top bottom center centre middle side
corner part front back edge area another one's something nothing everything overall visible clearly slightly
object objects thing things item items
""")
VERBS: frozenset[str] = _word_set("""
sits sit stands stand lies lie holds hold holding wears wear wearing rests rest resting hangs hang hanging covers
cover covered placed positioned located surrounded filled made set lying leaning leans faces face facing points
point pointing reads read says say walks walk walking runs run running plays play playing looks looking stares
grows grow growing flies fly flying floats float floating rides ride riding carries carry carrying eats eat eating
""")

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+|[^\sA-Za-z\d]")


def tokenize(text: str) -> list[str]:
    """Words (letters, apostrophes, hyphens), numbers and single punctuation marks, in order."""
    return _WORD.findall(text)


def is_noun_candidate(word: str) -> bool:
    """Could `word` be (part of) a head noun? Purely lexical: not a function word, verb, adverb or lexicon word."""
    low = word.lower()
    return (word[:1].isalpha() and len(low) > 1 and low not in FUNCTION_WORDS and low not in VERBS
            and low not in LEXICON and not low.endswith("ly"))


def pluralize(noun: str) -> str:
    low = noun.lower()
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def singularize(noun: str) -> str:
    low = noun.lower()
    if low.endswith("ies") and len(low) > 3:
        return noun[:-3] + "y"
    if low.endswith(("ses", "xes", "zes", "ches", "shes")):
        return noun[:-2]
    if low.endswith("s") and not low.endswith("ss"):
        return noun[:-1]
    return noun


def noun_forms(noun: str) -> set[str]:
    """The lower-cased singular and plural spellings accepted as 'the same noun'."""
    low = noun.lower()
    return {low, pluralize(low), singularize(low), pluralize(singularize(low))}


def canonical_words(text: str) -> tuple[str, ...]:
    """Lower-cased words with every lexicon synonym replaced by its group's canonical form; articles dropped."""
    out = []
    for token in tokenize(text.lower()):
        if not token[0].isalnum() or token in ("a", "an", "the"):
            continue
        slot = LEXICON.get(token)
        out.append(slot.canonical() if slot else singularize(token))
    return tuple(out)
