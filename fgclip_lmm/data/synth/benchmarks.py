"""Evaluation sets of the synthetic world, in the formats the real benchmarks use.

* POPE (lmms-eval parquet): test images with >= 3 objects, per image 3 present "colour shape" categories ("Is there
  a red circle in the image?" -> "yes") and as many absent ones ("no"), sampled as POPE defines them: `random` (any
  absent category), `popular` (the most frequent training categories that are absent), `adversarial` (the absent
  categories that co-occur most often in training images with the present ones).
* MME (lmms-eval parquet): Yes/No pairs sharing a `question_id` per image and category
  (existence, count, position, color, shape, size); categories interleaved in file order.
* FG-OVD (official JSONL rows): per box, one positive and 10 negatives changing exactly 1 / 2 / 3 attributes
  (hard / medium / easy) or phrases of other objects with another noun (trivial); `bbox` is COCO xywh pixels.
* Box classification (COCO instances JSON) with the 48 "colour shape" categories.
* Retrieval: long captions in ShareGPT4V JSON, short captions in COCO captions JSON (5 per image).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import combinations, product

import numpy as np

from fgclip_lmm.constants import POPE_SPLITS
from fgclip_lmm.data.synth.records import YES_NO_KINDS, absent_categories, rng_for, yes_no_pair
from fgclip_lmm.data.synth.world import (
    COLOURS,
    SHAPES,
    Scene,
    changed_variants,
    is_allowed,
    long_caption,
    short_caption_variants,
    with_article,
)

STREAM_POPE, STREAM_MME, STREAM_FGOVD = 5, 6, 7
FGOVD_LEVELS = {"hard": 1, "medium": 2, "easy": 3}
FGOVD_TEST_TYPES = {
    "hard": "1_attributes",
    "medium": "2_attributes",
    "easy": "3_attributes",
    "trivial": "shuffle_negatives",
}
CATEGORIES: tuple[tuple[str, str], ...] = tuple(product(COLOURS, SHAPES))  # (colour, shape), COCO-style ids 1..48
CATEGORY_ID = {f"{c} {s}": k + 1 for k, (c, s) in enumerate(CATEGORIES)}


def training_statistics(train: list[Scene]) -> tuple[Counter, Counter]:
    """Category frequencies and pairwise co-occurrence counts over the training images (for POPE sampling)."""
    frequency, cooccurrence = Counter(), Counter()
    for scene in train:
        cats = sorted(o.category for o in scene.objects)
        frequency.update(cats)
        cooccurrence.update(combinations(cats, 2))
    return frequency, cooccurrence


def pope_rows(
    scenes: list[Scene], train: list[Scene], seed: int, image_bytes: Callable[[Scene], bytes]
) -> dict[str, list[dict]]:
    frequency, cooccurrence = training_statistics(train)
    rows: dict[str, list[dict]] = {name: [] for name in POPE_SPLITS}
    for scene in scenes:
        rng = rng_for(seed, scene.index, STREAM_POPE)
        present = [o.category for o in scene.objects]
        positives = [present[i] for i in sorted(rng.choice(len(present), size=min(3, len(present)), replace=False))]
        absent = [f"{c} {s}" for c, s in absent_categories(scene)]
        k = len(positives)
        order = {name: list(absent) for name in POPE_SPLITS}
        order["random"] = [absent[i] for i in rng.permutation(len(absent))]
        # ties broken by category name so the choice is a pure function of the statistics
        order["popular"].sort(key=lambda c: (-frequency[c], c))
        co = {c: sum(cooccurrence[tuple(sorted((c, p)))] for p in present) for c in absent}
        order["adversarial"].sort(key=lambda c: (-co[c], c))
        png = image_bytes(scene)
        for name in POPE_SPLITS:
            pairs = [(c, "yes") for c in positives] + [(c, "no") for c in order[name][:k]]
            for category, answer in (pairs[i] for i in rng.permutation(len(pairs))):
                qid = str(len(rows[name]))
                rows[name].append(
                    {
                        "id": qid,
                        "question_id": qid,
                        "question": f"Is there {with_article(category)} in the image?",
                        "answer": answer,
                        "image_source": scene.stem,
                        "image": {"bytes": png, "path": None},
                        "category": name,
                    }
                )
    return rows


def mme_rows(scenes: list[Scene], seed: int, image_bytes: Callable[[Scene], bytes]) -> list[dict]:
    rows = []
    for scene in scenes:
        rng = rng_for(seed, scene.index, STREAM_MME)
        png = image_bytes(scene)
        shift = scene.index % len(YES_NO_KINDS)
        for kind in YES_NO_KINDS[shift:] + YES_NO_KINDS[:shift]:
            for question, answer in yes_no_pair(kind, scene, rng):
                rows.append(
                    {
                        "question_id": f"{kind}/{scene.stem}.png",
                        "question": f"{question} Please answer yes or no.",
                        "answer": answer,
                        "image": {"bytes": png, "path": None},
                        "category": kind,
                    }
                )
    return rows


def _sample(pool: list[str], n: int, rng: np.random.Generator) -> list[str]:
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]


def fgovd_rows(scenes: list[Scene], seed: int, size: int, n_negatives: int = 10) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {level: [] for level in FGOVD_TEST_TYPES}
    split_phrases = sorted({o.short_expr for s in scenes for o in s.objects})
    for scene in scenes:
        rng = rng_for(seed, scene.index, STREAM_FGOVD)
        for obj in scene.objects:
            negatives = {
                level: _sample(changed_variants(obj, k, scene.split), n_negatives, rng)
                for level, k in FGOVD_LEVELS.items()
            }
            others = [p for p in split_phrases if not p.endswith(" " + obj.shape)]
            if len(others) < n_negatives:  # tiny worlds: top up with other-noun phrases of the attribute space
                others += [
                    f"{z} {c} plain {s}"
                    for z, c, s in product(("small", "large"), COLOURS, SHAPES)
                    if s != obj.shape and is_allowed(c, s, scene.split) and f"{z} {c} plain {s}" not in others
                ]
            negatives["trivial"] = _sample(others, n_negatives, rng)
            x1, y1, x2, y2 = obj.box
            for level, negs in negatives.items():
                neg_ids = [SHAPES.index(n.split()[-1]) + 1 for n in negs]
                rows[level].append(
                    {
                        "img_path": scene.image_path(),
                        "bbox": [
                            round(x1 * size, 2),
                            round(y1 * size, 2),
                            round((x2 - x1) * size, 2),
                            round((y2 - y1) * size, 2),
                        ],
                        "pos_expression": [with_article(obj.short_expr)],
                        "neg_expression": [with_article(n) for n in negs],
                        "category_id": SHAPES.index(obj.shape) + 1,
                        "neg_category_ids": neg_ids,
                        "width": size,
                        "height": size,
                        "image_id": scene.index,
                        "sent_id": len(rows[level]),
                        "test_type": FGOVD_TEST_TYPES[level],
                    }
                )
    return rows


def _coco_images(scenes: list[Scene], size: int) -> list[dict]:
    return [{"id": s.index, "file_name": s.image_path(), "width": size, "height": size} for s in scenes]


def boxcls_coco(scenes: list[Scene], size: int) -> dict:
    annotations = []
    for scene in scenes:
        for obj in scene.objects:
            x1, y1, x2, y2 = (v * size for v in obj.box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": scene.index,
                    "category_id": CATEGORY_ID[obj.category],
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 2),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k, "name": name, "supercategory": name.split()[-1]} for name, k in CATEGORY_ID.items()]
    return {"images": _coco_images(scenes, size), "annotations": annotations, "categories": categories}


def long_retrieval(scenes: list[Scene]) -> list[dict]:
    return [
        {
            "id": s.stem,
            "image": s.image_path(),
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe this image in detail."},
                {"from": "gpt", "value": long_caption(s)},
            ],
        }
        for s in scenes
    ]


def short_retrieval(scenes: list[Scene], size: int, per_image: int = 5) -> dict:
    annotations = [
        {"id": 0, "image_id": s.index, "caption": caption}
        for s in scenes
        for caption in short_caption_variants(s, per_image)
    ]
    for k, annotation in enumerate(annotations):
        annotation["id"] = k + 1
    return {"images": _coco_images(scenes, size), "annotations": annotations}
