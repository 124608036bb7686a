"""Small datasets in the official formats for tests, smoke runs and examples.

* `write_mini_world(root)`: a hand-drawn miniature FineHARD JSON + stage-1 pairs JSONL + CLIP tokenizer (16
  images of coloured squares and circles, 1-3 boxes each, 10 negatives per box), independent of the synthetic
  world so the trainer tests do not move when the world's generator changes.
* `datagen_world(root, n)`: a few synthetic-world images and a FineHARD file whose captions describe them (boxes
  removed), the input of datagen's `ground` / `negatives` steps.
* `pope_rows`, `attr_rows`, `write_fixture_tasks`: POPE splits and an MME-style colour task on three drawn
  images (questions of different lengths, so batches really are left-padded), written as an lmms-eval task dir.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from fgclip_lmm.constants import POPE_SPLITS

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


def phrase(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def _draw(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=fill)


def write_mini_world(root: Path, n_images: int = 16, seed: int = 0, size: int = 32) -> dict:
    """Write the mini world under `root`; returns paths `finehard`, `pairs`, `images`, `tokenizer`."""
    from fgclip_lmm.data.tokenizers import train_clip_tokenizer

    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    finehard, pairs, texts = [], [], []
    for i in range(n_images):
        img = Image.new("RGB", (size, size), (128, 128, 128))
        draw = ImageDraw.Draw(img)
        boxes = []
        for j in range(rng.randint(1, 3)):
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            x0, y0 = rng.randint(0, size // 2), rng.randint(0, size // 2)
            x1, y1 = x0 + rng.randint(6, size // 2), y0 + rng.randint(6, size // 2)
            _draw(draw, shape, [x0, y0, x1, y1], COLOURS[colour])
            negs = [phrase(c, s) for c in COLOURS for s in SHAPES if (c, s) != (colour, shape)]
            negs = (negs * 2)[:10]
            boxes.append({"bbox": [x0 / size, y0 / size, x1 / size, y1 / size, 0.9],
                          "short_expr": phrase(colour, shape), "long_expr": f"a {phrase(colour, shape)} on grey",
                          "flag_short_neg": 1 if j % 2 == 0 else 0,
                          "short_expr_negs": {str(k): n for k, n in enumerate(negs)}})
        name = f"img_{i:03d}.png"
        img.save(root / "images" / name)
        caption = "a grey picture with " + " and ".join(f"a {b['short_expr']}" for b in boxes) + "."
        short = " and ".join(b["short_expr"] for b in boxes)
        finehard.append({"f_path": f"grit-20m/data-12m/{name}", "caption": caption, "short_caption": short,
                         "bbox_info": boxes})
        pairs.append({"image": name, "long_caption": caption, "short_caption": short})
        texts += [caption, short] + [b["long_expr"] for b in boxes]
    (root / "finehard.json").write_text(json.dumps(finehard))
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs) + "\n")
    texts += ["a photo of " + phrase(c, s) for c in COLOURS for s in SHAPES]
    train_clip_tokenizer(texts, root / "tokenizer", vocab_size=600, min_frequency=1)
    return {"finehard": root / "finehard.json", "pairs": root / "pairs.jsonl", "images": root / "images",
            "tokenizer": root / "tokenizer"}


@dataclass(frozen=True)
class DatagenWorld:
    image_root: Path  # FineHARD f_path values are relative to it (after the "grit-20m/data-12m/" prefix)
    finehard: Path  # JSON array with f_path, caption, short_caption and an empty bbox_info
    images: Path  # the folder holding only images (recaption input)
    num_images: int


def datagen_world(root: Path, n: int = 6, seed: int = 0) -> DatagenWorld:
    """`n` synthetic-world images (64 px) and their train split's captions with the boxes removed."""
    from fgclip_lmm.data.synth.generate import SynthConfig, generate

    generate(SynthConfig(out=str(root), images=n, seed=seed, size=64, workers=1, progress=False,
                         pope_images=4, mme_images=4, retrieval_images=4))
    train = json.loads((root / "finehard" / "train.json").read_text())
    finehard = root / "finehard_train_captions.json"
    finehard.write_text(json.dumps([{**item, "bbox_info": []} for item in train]))
    count = sum(1 for _ in (root / "images").rglob("*.png"))
    return DatagenWorld(root, finehard, root / "images", count)


# ------------------------------------------------------------------ lmms-eval fixture tasks on three drawn images
SCENES = (("red", "circle"), ("blue", "square"), ("green", "circle"))


def png(color: str, shape: str, size: int = 40) -> bytes:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    _draw(ImageDraw.Draw(image), shape, (8, 8, size - 8, size - 8), COLOURS[color])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pope_rows(split: str) -> list[dict]:
    """4 questions on each of 3 images (2 yes, 2 no), questions of different lengths."""
    rows = []
    for i, (color, shape) in enumerate(SCENES):
        data = png(color, shape)
        questions = [(f"Is there a {shape} in the image?", "yes"), ("Is there a triangle?", "no"),
                     (f"Looking carefully at every part of the picture, is there a {color} {shape}?", "yes"),
                     ("Is there a star in the image?", "no")]
        for j, (question, answer) in enumerate(questions):
            qid = f"{split}-{i}-{j}"
            rows.append({"id": qid, "question_id": qid, "question": question, "answer": answer,
                         "image_source": f"img{i}", "category": split, "image": {"bytes": data, "path": None}})
    return rows


def attr_rows(attribute: str) -> list[dict]:
    """One adjacent Yes/No pair per image."""
    rows = []
    for i, (color, shape) in enumerate(SCENES):
        other = "blue" if color != "blue" else "red"
        for question, answer in ((f"Is the {shape} {color}?", "Yes"), (f"Is the {shape} {other}?", "No")):
            rows.append({"question_id": f"{attribute}-{i}", "question": f"{question} Please answer yes or no.",
                         "answer": answer, "category": attribute, "image_source": f"img{i}",
                         "image": {"bytes": png(color, shape), "path": None}})
    return rows


def write_fixture_tasks(out: Path) -> list[str]:
    """Every POPE split and the `color` attribute task under `out`; returns the task names."""
    from fgclip_lmm.eval.lmm.task_files import write_task_dir

    return write_task_dir(out, {s: pope_rows(s) for s in POPE_SPLITS}, {"color": attr_rows("color")})
