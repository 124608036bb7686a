"""The synthetic-world fixture of the datagen tests (and a sanity test of it).

`synthetic_world(root, n)` returns a `World`: an image folder and a FineHARD file whose captions describe the
images. It uses the data engineer's generator (`fgclip_lmm.data.synth`) when present, and otherwise draws a few
PIL scenes in the same caption style, so the datagen tests do not depend on that module landing first.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "blue": (40, 70, 220), "green": (40, 170, 60), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square")
SIZES = {"small": 10, "large": 22}
CELLS = {"top left corner": (0, 0), "top right corner": (1, 0), "bottom left corner": (0, 1), "bottom right corner": (1, 1)}


@dataclass(frozen=True)
class World:
    image_root: Path  # FineHARD f_path values are relative to it (after the "grit-20m/data-12m/" prefix)
    finehard: Path  # JSON array with f_path, caption, short_caption, bbox_info
    images: Path  # the folder holding only images (recaption input)
    num_images: int


def _draw_world(root: Path, n: int, seed: int) -> World:
    rng = random.Random(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        image = Image.new("RGB", (64, 64), (200, 200, 200))
        draw = ImageDraw.Draw(image)
        sentences, shorts = [], []
        for cell in rng.sample(sorted(CELLS), rng.randint(1, 3)):
            colour, shape, size = rng.choice(sorted(COLOURS)), rng.choice(SHAPES), rng.choice(sorted(SIZES))
            cx, cy = 16 + 32 * CELLS[cell][0], 16 + 32 * CELLS[cell][1]
            half = SIZES[size] // 2
            (draw.ellipse if shape == "circle" else draw.rectangle)([cx - half, cy - half, cx + half, cy + half],
                                                                     fill=COLOURS[colour])
            sentences.append(f"In the {cell} there is a {size} {colour} {shape}.")
            shorts.append(f"a {colour} {shape}")
        name = f"{i:06d}.png"
        image.save(images / name)
        items.append({"f_path": f"grit-20m/data-12m/images/{name}",
                      "caption": f"The image shows {len(shorts)} shapes on a light gray background. " + " ".join(sentences),
                      "short_caption": " and ".join(shorts), "bbox_info": []})
    finehard = root / "finehard.json"
    finehard.write_text(json.dumps(items))
    return World(root, finehard, images, n)


def synthetic_world(root: Path, n: int = 6, seed: int = 0) -> World:
    try:
        from fgclip_lmm.data.synth.generate import SynthConfig, generate
    except ImportError:
        return _draw_world(root, n, seed)
    generate(SynthConfig(out=str(root), images=n, seed=seed, size=64, workers=1, progress=False,
                         pope_images=4, mme_images=4, retrieval_images=4))
    train = json.loads((root / "finehard" / "train.json").read_text())
    finehard = root / "finehard_train_captions.json"
    finehard.write_text(json.dumps([{**item, "bbox_info": []} for item in train]))
    count = sum(1 for p in (root / "images").rglob("*.png"))
    return World(root, finehard, root / "images", count)


@pytest.mark.parametrize("drawn", [False, True])
def test_world_has_images_and_captions(tmp_path: Path, drawn: bool) -> None:
    world = _draw_world(tmp_path, 4, 1) if drawn else synthetic_world(tmp_path, 6)
    items = json.loads(world.finehard.read_text())
    assert items and world.num_images >= len(items)
    for item in items:
        path = world.image_root / item["f_path"].removeprefix("grit-20m/data-12m/")
        with Image.open(path) as image:
            assert image.size == (64, 64)
        assert "there is a" in item["caption"] and item["short_caption"]
