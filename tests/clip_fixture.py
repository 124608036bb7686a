"""A hand-made miniature FineHARD / stage-1 dataset for trainer tests (independent of the synthetic world)."""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


def phrase(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def write_mini_world(root: Path, n_images: int = 16, seed: int = 0, size: int = 32) -> dict:
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
            (draw.rectangle if shape == "square" else draw.ellipse)([x0, y0, x1, y1], fill=COLOURS[colour])
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
