"""Training records of the synthetic world in the official formats: FineHARD, stage-1 pairs, LLaVA align/instruct.

Each function maps one scene (and an RNG seeded by (seed, scene index, stream id)) to one record, so records
can be built in any order. Question/answer generators are shared with the benchmarks (`qa_pairs`), which keeps
the training and evaluation phrasing identical: a short answer is requested with LLaVA-1.5's suffix
"Answer the question using a single word or phrase." and answered with one word ("Yes", "Red", "2").
"""

from __future__ import annotations

from itertools import product

import numpy as np

from fgclip_lmm.data.synth.world import (
    COLOURS,
    MAX_OBJECTS,
    PATTERN_NOUNS,
    PATTERNS,
    PLURALS,
    POSITION_PHRASES,
    SHAPES,
    SIZES,
    Scene,
    SynthObject,
    hard_negatives,
    is_allowed,
    long_caption,
    short_caption,
    with_article,
)

FINEHARD_PREFIX = "grit-20m/data-12m/"  # FineHARD's f_path prefix, stripped by the reader against the world root
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
ALIGN_PROMPTS = (
    "Describe the image briefly.",
    "Give a short caption for this picture.",
    "Summarise the scene in a few words.",
    "What does this image show?",
)
STREAM_FINEHARD, STREAM_LLAVA, STREAM_ALIGN = 2, 3, 4


def rng_for(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng((seed, index, stream))


def finehard_item(scene: Scene, seed: int, n_negatives: int = 10, hard_fraction: float = 0.9) -> dict:
    rng = rng_for(seed, scene.index, STREAM_FINEHARD)
    boxes = []
    for obj in scene.objects:
        has_negatives = bool(rng.random() < hard_fraction)
        negatives = hard_negatives(obj, rng, scene.split, n_negatives) if has_negatives else []
        boxes.append(
            {
                "bbox": [*obj.box, 1.0],
                "short_expr": obj.short_expr,
                "long_expr": obj.long_expr,
                "flag_short_neg": int(has_negatives),
                "short_expr_negs": {f"{k:02d}": neg for k, neg in enumerate(negatives)},
            }
        )
    return {
        "f_path": FINEHARD_PREFIX + scene.image_path(),
        "caption": long_caption(scene),
        "short_caption": short_caption(scene),
        "bbox_info": boxes,
    }


def stage1_row(scene: Scene) -> dict:
    return {"image": scene.image_path(), "long_caption": long_caption(scene), "short_caption": short_caption(scene)}


def align_record(scene: Scene, seed: int) -> dict:
    prompt = ALIGN_PROMPTS[int(rng_for(seed, scene.index, STREAM_ALIGN).integers(len(ALIGN_PROMPTS)))]
    return {
        "id": f"align-{scene.stem}",
        "image": scene.image_path(),
        "conversations": [
            {"from": "human", "value": f"<image>\n{prompt}"},
            {"from": "gpt", "value": short_caption(scene)[0].upper() + short_caption(scene)[1:] + "."},
        ],
    }


def absent_categories(scene: Scene) -> list[tuple[str, str]]:
    present = {(o.colour, o.shape) for o in scene.objects}
    return [(c, s) for c, s in product(COLOURS, SHAPES) if (c, s) not in present and is_allowed(c, s, scene.split)]


def _other(value: str, vocab, rng: np.random.Generator) -> str:
    choices = [v for v in vocab if v != value]
    return choices[int(rng.integers(len(choices)))]


def yes_no_pair(kind: str, scene: Scene, rng: np.random.Generator) -> tuple[tuple[str, str], tuple[str, str]]:
    """MME-style pair of questions about one image, (question, "Yes") and (question, "No"), for attribute `kind`."""
    obj: SynthObject = scene.objects[int(rng.integers(len(scene.objects)))]
    if kind == "existence":
        absent = absent_categories(scene)
        colour, shape = absent[int(rng.integers(len(absent)))]
        return (f"Is there {with_article(obj.category)} in the image?", "Yes"), (
            f"Is there {with_article(f'{colour} {shape}')} in the image?",
            "No",
        )
    if kind == "count":
        # the whole scene's object count is uniform on 1..MAX_OBJECTS and the wrong number uniform on the others,
        # so the number asked has the same distribution in both halves: the wording alone cannot give the answer
        # (a shape's count is 1 for most shapes, which made "exactly 1" a text shortcut for "yes")
        n = len(scene.objects)
        wrong = _other(str(n), [str(k) for k in range(1, MAX_OBJECTS + 1)], rng)
        return (_count_question(str(n)), "Yes"), (_count_question(wrong), "No")
    if kind == "position":
        wrong = _other(obj.where, POSITION_PHRASES, rng)
        return (f"Is the {obj.category} {obj.where}?", "Yes"), (f"Is the {obj.category} {wrong}?", "No")
    if kind == "color":
        wrong = _other(obj.colour, [c for c in COLOURS if is_allowed(c, obj.shape, scene.split)], rng)
        return (f"Is the {obj.shape} {obj.where} {obj.colour}?", "Yes"), (
            f"Is the {obj.shape} {obj.where} {wrong}?",
            "No",
        )
    if kind == "shape":
        wrong = _other(obj.shape, [s for s in SHAPES if is_allowed(obj.colour, s, scene.split)], rng)
        return (f"Is the object {obj.where} {with_article(obj.shape)}?", "Yes"), (
            f"Is the object {obj.where} {with_article(wrong)}?",
            "No",
        )
    if kind == "size":
        wrong = _other(obj.size, SIZES, rng)
        return (f"Is the {obj.category} {obj.size}?", "Yes"), (f"Is the {obj.category} {wrong}?", "No")
    raise ValueError(f"unknown question kind {kind!r}")


def _count_question(k: str) -> str:
    return "Is there exactly 1 object in the image?" if k == "1" else f"Are there exactly {k} objects in the image?"


def simple_yes_no(kind: str, scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A training-only warm-up question, yes or no with equal odds: "Is there anything <colour>?" or "Is there a
    <shape>?". One attribute, no object to bind it to: the first visual lookup a tiny LLM learns, on which the
    attribute-binding questions build (measured in benchmarks/bench_lmm_recipe.py)."""
    vocab, present = (COLOURS, {o.colour for o in scene.objects}) if kind == "any_colour" else (
        SHAPES, {o.shape for o in scene.objects})
    absent = [v for v in vocab if v not in present]
    yes = bool(rng.random() < 0.5) or not absent
    pool = sorted(present) if yes else absent
    value = pool[int(rng.integers(len(pool)))]
    question = f"Is there anything {value} in the image?" if kind == "any_colour" else \
        f"Is there {with_article(value)} in the image?"
    return question, "Yes" if yes else "No"


YES_NO_KINDS = ("existence", "count", "position", "color", "shape", "size")
SIMPLE_KINDS = ("any_colour", "any_shape")  # training only (`simple_yes_no`)
SIMPLE_SHARE = 0.5  # of the instruct questions (the lever "warm-up questions" of benchmarks/bench_lmm_recipe.py)
INSTRUCT_PER_IMAGE = 8  # single-turn instruct conversations per training image
OPEN_KINDS = ("colour", "shape", "size", "pattern", "count", "position", "describe")


def open_question(kind: str, scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """One open question with its answer (single word or phrase, except `describe`)."""
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    if kind == "colour":
        return f"What colour is the {obj.shape} {obj.where}?{SHORT_ANSWER}", obj.colour.capitalize()
    if kind == "shape":
        return f"What shape is the object {obj.where}?{SHORT_ANSWER}", obj.shape.capitalize()
    if kind == "size":
        return f"What size is the {obj.category}?{SHORT_ANSWER}", obj.size.capitalize()
    if kind == "pattern":
        return f"What pattern does the {obj.category} have?{SHORT_ANSWER}", PATTERN_NOUNS[obj.pattern].capitalize()
    if kind == "count":
        if rng.random() < 0.5:
            return f"How many objects are in the image?{SHORT_ANSWER}", str(len(scene.objects))
        n = sum(o.shape == obj.shape for o in scene.objects)
        return f"How many {PLURALS[obj.shape]} are there?{SHORT_ANSWER}", str(n)
    if kind == "position":
        return f"Where is the {obj.category}?{SHORT_ANSWER}", obj.where.capitalize()
    if kind == "describe":
        return f"Describe the object {obj.where}.", f"It is {obj.long_expr.split(',')[0]}."
    raise ValueError(f"unknown question kind {kind!r}")


def instruct_turn(scene: Scene, rng: np.random.Generator, simple_share: float = SIMPLE_SHARE) -> tuple[str, str]:
    """One (question, answer): a warm-up question (`simple_yes_no`) with probability `simple_share`, else one half
    of an MME-style yes/no pair (70%) or an open question (30%)."""
    draw = rng.random()
    if draw < simple_share:
        question, answer = simple_yes_no(SIMPLE_KINDS[int(rng.integers(len(SIMPLE_KINDS)))], scene, rng)
        return question + SHORT_ANSWER, answer
    if draw < simple_share + 0.7 * (1 - simple_share):
        kind = YES_NO_KINDS[int(rng.integers(len(YES_NO_KINDS)))]
        question, answer = yes_no_pair(kind, scene, rng)[int(rng.integers(2))]
        return question + SHORT_ANSWER, answer
    return open_question(OPEN_KINDS[int(rng.integers(len(OPEN_KINDS)))], scene, rng)


def instruct_turns(scene: Scene, seed: int, per_image: int = INSTRUCT_PER_IMAGE,
                   simple_share: float = SIMPLE_SHARE) -> list[tuple[str, str]]:
    """Up to `per_image` distinct questions about one image (`instruct_turn`)."""
    rng = rng_for(seed, scene.index, STREAM_LLAVA)
    return list(dict.fromkeys(instruct_turn(scene, rng, simple_share) for _ in range(per_image)))


def as_conversation(first_prefix: str, turns: list[tuple[str, str]]) -> list[dict]:
    conversations = []
    for t, (question, answer) in enumerate(turns):
        conversations += [{"from": "human", "value": (first_prefix if t == 0 else "") + question},
                          {"from": "gpt", "value": answer}]
    return conversations


def instruct_records(scene: Scene, seed: int, per_image: int = INSTRUCT_PER_IMAGE,
                     simple_share: float = SIMPLE_SHARE) -> list[dict]:
    """Single-turn conversations about the image, one per question of `instruct_turns`. Single-turn because a
    tiny LLM learns to read the image tokens much faster when the question follows them directly (a question in a
    later turn must look back across earlier ones; `benchmarks/README.md`, issue 15); a pair's two halves can
    only ever sit in different conversations."""
    return [{"id": f"instruct-{scene.stem}-{k}", "image": scene.image_path(),
             "conversations": as_conversation("<image>\n", [turn])}
            for k, turn in enumerate(instruct_turns(scene, seed, per_image, simple_share))]


def scene_text(scene: Scene) -> str:
    """The scene written out, object by object in reading order: what the image shows, as text."""
    objects = "; ".join(f"a {o.size} {o.colour} {o.pattern} {o.shape} {o.where}" for o in scene.objects)
    return f"Objects: {objects}."


def text_records(scene: Scene, seed: int, per_image: int = INSTRUCT_PER_IMAGE) -> list[dict]:
    """The conversations of `instruct_records` with the image replaced by `scene_text`: text-only data on which
    the demo's tiny LLM learns to answer these questions from a description before it ever sees image tokens
    (LLaVA assumes a pretrained LLM; a random one never forms the lookup, issue 15)."""
    return [{"id": f"text-{scene.stem}-{k}", "conversations": as_conversation(scene_text(scene) + "\n", [turn])}
            for k, turn in enumerate(instruct_turns(scene, seed, per_image))]


def text_only_records() -> list[dict]:
    """A few image-less conversations about the world's vocabulary (LLaVA mixes text-only rows in)."""
    facts = [
        ("Which shapes can objects have in these pictures?", ", ".join(SHAPES[:-1]) + " and " + SHAPES[-1] + "."),
        ("Which colours can objects have?", ", ".join(list(COLOURS)[:-1]) + " and " + list(COLOURS)[-1] + "."),
        ("Which sizes can objects have?", ", ".join(list(SIZES)[:-1]) + " and " + list(SIZES)[-1] + "."),
        ("Which patterns can objects have?", ", ".join(PATTERNS[:-1]) + " and " + PATTERNS[-1] + "."),
    ]
    return [
        {"id": f"text-{k}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for k, (q, a) in enumerate(facts)
    ]
