"""Shared helpers for the eval-lmm tests: a tiny LLaVA export and small POPE / attribute task fixtures.

The images are drawn here (coloured circles and squares), so the tests do not depend on the synthetic world;
questions have different lengths so that batches really are left-padded.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from fgclip_lmm.eval.lmm.task_files import POPE_SPLITS, write_task_dir
from fgclip_lmm.eval.lmm.tiny import build_tiny_llava

# The suite shares 2 CPU cores: one intra-op thread avoids oversubscription stalls.
torch.set_num_threads(1)
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                  "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu"}
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
SCENES = (("red", "circle"), ("blue", "square"), ("green", "circle"))


def png(color: str, shape: str, size: int = 40) -> bytes:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)((8, 8, size - 8, size - 8), fill=COLORS[color])
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
    return write_task_dir(out, {s: pope_rows(s) for s in POPE_SPLITS}, {"color": attr_rows("color")})


def make_tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA export in a fresh temporary directory (each test module builds its own)."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "export")


def make_fixture_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    write_fixture_tasks(out)
    return out


def test_fixture_tasks_have_pairs_and_three_images(tmp_path: Path) -> None:
    names = write_fixture_tasks(tmp_path)
    assert names == ["fgclip_pope_random", "fgclip_pope_popular", "fgclip_pope_adversarial", "fgclip_attr_color"]
    assert min(p.name for p in (tmp_path / "data").iterdir()) == "attr_color.parquet"
    assert len({r["image_source"] for r in pope_rows("random")}) == 3
