"""The synthetic fine-grained world: attribute vocabulary, scene sampling, phrases, captions and hard negatives.

A scene is 1-5 objects on a background. Each object has a shape (its noun), a colour, a size, a pattern and a
position; objects sit in distinct cells of a 3 x 3 grid, so positions are unambiguous, boxes never overlap, and
"the object in the top left corner" names exactly one object. Within a scene the (colour, shape) pairs are
distinct, so "the red circle" is unambiguous too. Sizes are fractions of the image side chosen so that at 64 px
small / medium / large objects differ by several pixels and stripes / dots / checks stay visible.

Every phrase is built from one template, `attribute_phrase`, and `parse_attributes` reads it back, which is how
hard negatives are verified false for their object while keeping its noun.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise, product

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "cyan": (30, 200, 210),
    "blue": (40, 70, 220),
    "purple": (140, 50, 190),
    "pink": (245, 120, 180),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
PLURALS: dict[str, str] = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}
SIZES: dict[str, float] = {"small": 0.15, "medium": 0.22, "large": 0.30}  # box side / image side
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
PATTERN_NOUNS: dict[str, str] = {"plain": "no pattern", "striped": "stripes", "dotted": "dots", "checkered": "checks"}
# Grid cells in reading order; the phrase completes "the red circle is ...".
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
POSITION_PHRASES: tuple[str, ...] = (
    "in the top left corner",
    "at the top",
    "in the top right corner",
    "on the left",
    "in the center",
    "on the right",
    "in the bottom left corner",
    "at the bottom",
    "in the bottom right corner",
)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "light gray": (200, 200, 200),
    "dark gray": (75, 75, 80),
    "beige": (220, 205, 175),
    "pale blue": (185, 205, 225),
    "pale green": (190, 215, 190),
    "brown": (120, 95, 70),
}
BACKGROUND_STYLES: tuple[str, ...] = ("plain", "gradient", "noisy", "grid")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
MAX_OBJECTS = 5
ATTRIBUTES: tuple[str, ...] = ("colour", "size", "pattern")  # what a negative may change; never the shape
# (colour, shape) pairs that only ever appear in the held-out split (objects and texts alike).
HELDOUT_COMBINATIONS: frozenset[tuple[str, str]] = frozenset(
    (colour, shape) for k, shape in enumerate(SHAPES) for colour in [tuple(COLOURS)[(3 * k + 1) % len(COLOURS)]]
)


@dataclass(frozen=True)
class SynthObject:
    shape: str
    colour: str
    size: str
    pattern: str
    cell: int  # 0..8, reading order of the 3 x 3 grid
    box: tuple[float, float, float, float]  # normalised xyxy

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def where(self) -> str:
        return POSITION_PHRASES[self.cell]

    @property
    def category(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def short_expr(self) -> str:
        return attribute_phrase(self.size, self.colour, self.pattern, self.shape)

    @property
    def long_expr(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} with {PATTERN_NOUNS[self.pattern]}, {self.where} of the image"


@dataclass(frozen=True)
class Scene:
    index: int
    split: str
    background: str
    style: str
    objects: tuple[SynthObject, ...]

    @property
    def stem(self) -> str:
        return f"{self.index:06d}"

    def image_path(self) -> str:
        return f"images/{self.split}/{self.stem}.png"


def attribute_phrase(size: str, colour: str, pattern: str, shape: str) -> str:
    return f"{size} {colour} {pattern} {shape}"


def parse_attributes(phrase: str) -> dict[str, str]:
    """Read the attributes back from any world phrase (each attribute word belongs to one attribute only)."""
    words = phrase.lower().replace(",", " ").split()
    found: dict[str, str] = {}
    for name, vocab in (("size", SIZES), ("colour", COLOURS), ("pattern", PATTERNS), ("shape", SHAPES)):
        hits = [w for w in words if w in vocab]
        if len(hits) == 1:
            found[name] = hits[0]
    return found


def is_allowed(colour: str, shape: str, split: str) -> bool:
    """Held-out (colour, shape) pairs exist only in the held-out split, in images and in texts."""
    return split == "heldout" or (colour, shape) not in HELDOUT_COMBINATIONS


def sample_scene(index: int, split: str, seed: int) -> Scene:
    """Deterministic in (seed, index): scenes can be drawn in any order or process."""
    rng = np.random.default_rng((seed, index))
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = sorted(int(c) for c in rng.choice(9, size=n, replace=False))
    colours, shapes = tuple(COLOURS), SHAPES
    combos = [(c, s) for c, s in product(colours, shapes) if (c, s) not in HELDOUT_COMBINATIONS]
    picks = [combos[i] for i in rng.choice(len(combos), size=n, replace=False)]
    if split == "heldout":  # at least one held-out pair per held-out image
        held = sorted(HELDOUT_COMBINATIONS)
        picks[int(rng.integers(n))] = held[int(rng.integers(len(held)))]
    objects = []
    for cell, (colour, shape) in zip(cells, picks, strict=True):
        size = tuple(SIZES)[int(rng.integers(len(SIZES)))]
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        side = SIZES[size]
        row, col = divmod(cell, 3)
        x1 = col / 3 + float(rng.uniform(0.01, 1 / 3 - side - 0.01))
        y1 = row / 3 + float(rng.uniform(0.01, 1 / 3 - side - 0.01))
        box = (round(x1, 4), round(y1, 4), round(x1 + side, 4), round(y1 + side, 4))
        objects.append(SynthObject(shape, colour, size, pattern, cell, box))
    background = tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    style = BACKGROUND_STYLES[int(rng.integers(len(BACKGROUND_STYLES)))]
    return Scene(index, split, background, style, tuple(objects))


def changed_variants(obj: SynthObject, n_changed: int, split: str) -> list[str]:
    """Every phrase that keeps the noun and differs from `obj` in exactly `n_changed` of colour/size/pattern."""
    out = []
    for size, colour, pattern in product(SIZES, COLOURS, PATTERNS):
        diff = (size != obj.size) + (colour != obj.colour) + (pattern != obj.pattern)
        if diff == n_changed and is_allowed(colour, obj.shape, split):
            out.append(attribute_phrase(size, colour, pattern, obj.shape))
    return out


def hard_negatives(
    obj: SynthObject, rng: np.random.Generator, split: str, n: int = 10, changes: tuple[int, ...] = (1, 2, 3)
) -> list[str]:
    """`n` distinct negatives, each changing a number of attributes drawn from `changes`; never the noun."""
    pools = {k: changed_variants(obj, k, split) for k in changes}
    chosen: list[str] = []
    for k in rng.choice(changes, size=n):
        pool = [p for p in pools[int(k)] if p not in chosen] or [
            p for k2 in changes for p in pools[k2] if p not in chosen
        ]
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


def is_false_for(phrase: str, obj: SynthObject) -> bool:
    """True when `phrase` names `obj`'s noun but contradicts at least one of its attributes."""
    attrs = parse_attributes(phrase)
    truth = {"shape": obj.shape, "colour": obj.colour, "size": obj.size, "pattern": obj.pattern}
    return attrs.get("shape") == obj.shape and any(attrs.get(a, truth[a]) != truth[a] for a in ATTRIBUTES)


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def short_caption(scene: Scene) -> str:
    """FineHARD-style short caption (the reader prepends "a photo of ")."""
    return _join([with_article(o.category) for o in scene.objects])


def short_caption_variants(scene: Scene, k: int = 5) -> list[str]:
    """`k` distinct short captions of one image (COCO-style retrieval ground truth)."""
    objs = scene.objects
    n = len(objs)
    count = f"{NUMBER_WORDS[n]} object{'s' if n > 1 else ''}"
    templates = [
        short_caption(scene),
        f"{count} on a {scene.background} background",
        "an image of " + _join([with_article(f"{o.size} {o.category}") for o in objs]),
        _join([with_article(o.category) for o in reversed(objs)]) + f" on {scene.background}",
        "a picture showing " + _join([with_article(f"{o.pattern} {o.shape}") for o in objs]),
        f"a {scene.style} {scene.background} scene with {count}",
    ]
    return list(dict.fromkeys(templates))[:k]


def _relations(objs: tuple[SynthObject, ...]) -> list[str]:
    sentences = []
    for a, b in pairwise(objs):
        (ra, ca), (rb, cb) = divmod(a.cell, 3), divmod(b.cell, 3)
        if ra == rb:
            sentences.append(f"The {a.colour} {a.shape} is to the left of the {b.colour} {b.shape}.")
        elif ca == cb:
            sentences.append(f"The {a.colour} {a.shape} is above the {b.colour} {b.shape}.")
        else:  # reading order: b is on a lower row
            side = "right" if cb > ca else "left"
            sentences.append(f"The {b.colour} {b.shape} is below and to the {side} of the {a.colour} {a.shape}.")
    return sentences


def long_caption(scene: Scene) -> str:
    """Every object with all its attributes and position, plus pairwise relations in reading order."""
    n = len(scene.objects)
    count = f"{NUMBER_WORDS[n]} object{'s' if n > 1 else ''}"
    style = {"plain": "plain", "gradient": "softly graded", "noisy": "grainy", "grid": "thin grid-lined"}[scene.style]
    sentences = [f"The image shows {count} on a {style} {scene.background} background."]
    for o in scene.objects:
        sentences.append(f"{o.where.capitalize()} there is a {o.size} {o.category} with {PATTERN_NOUNS[o.pattern]}.")
    sentences += _relations(scene.objects)
    return " ".join(sentences)
