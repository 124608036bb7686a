"""The datagen steps through the CLI with tiny transformers checkpoints built from configs (no download):
a LLaVA export (wired to a known reply, and random), an OWLv2 detector, and a random Llama chat LLM."""
from __future__ import annotations

import json

import pytest

from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset
from fgclip_lmm.datagen.cli import main
from fgclip_lmm.testing import TinyLlavaConfig, build_tiny_llava, write_tiny_grounding_dino, write_tiny_owlv2

REPLY = "A large red circle sits beside two small blue squares near the picture edge."


@pytest.fixture()
def world(datagen_world):
    return datagen_world


@pytest.fixture()
def llama(tiny_llama):
    return tiny_llama


def _stats(out) -> dict:
    return json.loads(out.with_name(out.stem + ".stats.json").read_text())


def test_recaption_with_a_tiny_llava_export(world, tmp_path) -> None:
    model = build_tiny_llava(tmp_path / "wired", TinyLlavaConfig(reply=REPLY, vocab_size=600))
    out = tmp_path / "cap.json"
    assert main(["recaption", "--images", str(world.images), "--out", str(out), "--model", str(model),
                 "--min-words", "8", "--max-new-tokens", "24", "--short-max-new-tokens", "24", "--batch-size", "4",
                 "--dtype", "bfloat16", "--no-progress"]) == 0  # pixel values follow the model dtype
    records = json.loads(out.read_text())
    assert len(records) == world.num_images
    assert {(r["caption"], r["short_caption"]) for r in records} == {(REPLY, REPLY)}
    assert _stats(out)["counts"] == {"long_attempts": world.num_images, "short_attempts": world.num_images}
    assert len(FineHardDataset(FineHardConfig(data_path=str(out), image_root=str(world.images)))) == world.num_images


def test_random_llava_output_is_rejected_and_never_written(world, tmp_path) -> None:
    model = build_tiny_llava(tmp_path / "random")
    out = tmp_path / "cap.json"
    # every image rejected: the files and the report are written, and the run fails (an empty dataset is no success)
    assert main(["recaption", "--images", str(world.images), "--out", str(out), "--model", str(model),
                 "--max-new-tokens", "12", "--max-retries", "1", "--batch-size", "6", "--no-progress"]) == 2
    assert json.loads(out.read_text()) == []
    stats = _stats(out)
    assert stats["ok"] == 0 and sum(stats["rejected"].values()) == world.num_images
    assert all(reason.startswith("long:") for reason in stats["rejected"])
    degenerate = {k: v for k, v in stats["counts"].items() if k.startswith("long_degenerate:")}
    assert stats["counts"]["long_attempts"] == sum(degenerate.values()) == 2 * world.num_images


def test_ground_with_a_tiny_owlv2(world, tmp_path) -> None:
    captions = [r["caption"] for r in json.loads(world.finehard.read_text())]
    detector = write_tiny_owlv2(tmp_path / "owl", captions, score=0.45)
    out = tmp_path / "grounded.json"
    assert main(["ground", "--input", str(world.finehard), "--images", str(world.image_root), "--out", str(out),
                 "--detector", str(detector), "--batch-size", "3", "--no-progress"]) == 0
    records = json.loads(out.read_text())
    assert len(records) == len(captions) and sum(len(r["bbox_info"]) for r in records) > 0
    for record in records:
        assert 0 < len(record["bbox_info"]) <= 4
        shorts = [b["short_expr"] for b in record["bbox_info"]]
        assert len(set(shorts)) == len(shorts)  # one box per phrase
        for box in record["bbox_info"]:
            x1, y1, x2, y2, score = box["bbox"]
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and score == pytest.approx(0.45, abs=0.01)
            assert box["short_expr"] in record["caption"].lower() and box["flag_short_neg"] == 0
    dataset = FineHardDataset(FineHardConfig(data_path=str(out), image_root=str(world.image_root)))
    assert len(dataset) == len(records) and dataset[0]["boxes"].shape[1] == 4
    strict = tmp_path / "strict.json"
    assert main(["ground", "--input", str(world.finehard), "--images", str(world.image_root), "--out", str(strict),
                 "--detector", str(detector), "--threshold", "0.5", "--no-progress"]) == 0
    assert all(r["bbox_info"] == [] for r in json.loads(strict.read_text()))
    assert _stats(strict)["counts"]["no_boxes"] == len(records)


def test_ground_with_a_tiny_grounding_dino(world, tmp_path) -> None:
    records = json.loads(world.finehard.read_text())[:3]
    detector = write_tiny_grounding_dino(tmp_path / "gdino", [r["caption"] for r in records])
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps(records))
    out = tmp_path / "grounded.json"
    assert main(["ground", "--input", str(inputs), "--images", str(world.image_root), "--out", str(out),
                 "--detector", str(detector), "--no-progress"]) == 0
    grounded = json.loads(out.read_text())
    assert len(grounded) == 3 and all(record["bbox_info"] for record in grounded)
    for record in grounded:
        for box in record["bbox_info"]:
            x1, y1, x2, y2, score = box["bbox"]
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and score > 0.4
            assert box["short_expr"] in record["caption"].lower()
    assert len(FineHardDataset(FineHardConfig(data_path=str(out), image_root=str(world.image_root)))) == 3


def test_ground_with_llm_phrases_falls_back_to_the_chunker(world, tmp_path, llama) -> None:
    captions = [r["caption"] for r in json.loads(world.finehard.read_text())]
    detector = write_tiny_owlv2(tmp_path / "owl", captions, score=0.45)
    out = tmp_path / "grounded.json"
    assert main(["ground", "--input", str(world.finehard), "--images", str(world.image_root), "--out", str(out),
                 "--detector", str(detector), "--phrases", "llm", "--phrase-model", str(llama), "--no-progress"]) == 0
    counts = _stats(out)["counts"]
    assert counts["phrases_llm_fallback"] == len(captions)  # a random LLM quotes nothing from the caption
    assert counts["boxes"] > 0


def test_negatives_with_a_tiny_llama_replace_its_garbage(world, tmp_path, llama) -> None:
    records = json.loads(world.finehard.read_text())[:3]
    for record in records:
        record["bbox_info"] = [
            {"bbox": [0.1, 0.1, 0.4, 0.4, 0.9], "short_expr": "large red striped circle",
             "long_expr": "a large red circle with stripes", "flag_short_neg": 0},
            {"bbox": [0.5, 0.5, 0.9, 0.9, 0.8], "short_expr": "open door", "long_expr": "an open door",
             "flag_short_neg": 0}]
    grounded = tmp_path / "grounded.json"
    grounded.write_text(json.dumps(records))
    out = tmp_path / "final.json"
    assert main(["negatives", "--input", str(grounded), "--out", str(out), "--model", str(llama),
                 "--max-new-tokens", "16", "--device", "auto", "--no-progress"]) == 0
    final = json.loads(out.read_text())
    counts = _stats(out)["counts"]
    assert counts["boxes_full"] == 3 and counts["box_short:too_few"] == 3  # "open door" has one lexicon swap
    assert counts.get("llm_accepted", 0) + counts["lexicon_accepted"] == 3 * 10 + 3 * 1
    for record in final:
        circle, door = record["bbox_info"]
        assert circle["flag_short_neg"] == 1 and len(circle["short_expr_negs"]) == 10
        assert all("circle" in neg for neg in circle["short_expr_negs"].values())
        assert door["flag_short_neg"] == 0 and door["short_expr_negs"] == {}
    dataset = FineHardDataset(FineHardConfig(data_path=str(out), image_root=str(world.image_root)))
    assert [len(dataset[i]["hard_texts"]) for i in range(len(dataset))] == [11, 11, 11]
