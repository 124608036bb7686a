"""The synthetic world: read-back through the real readers, verified negatives, POPE/MME/FG-OVD semantics,
held-out split, determinism, and images that show their attributes at 64 px."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from fgclip_lmm.data.collate import FGClipCollator
from fgclip_lmm.data.finehard import FineHardDataset
from fgclip_lmm.data.llava_json import LlavaJsonDataset
from fgclip_lmm.data.pairs import LongCaptionPairsDataset, PairsConfig
from fgclip_lmm.data.synth.generate import SynthConfig, generate
from fgclip_lmm.data.synth.manifest import load_manifest
from fgclip_lmm.data.synth.render import render_scene
from fgclip_lmm.data.synth.world import ATTRIBUTES, COLOURS, HELDOUT_COMBINATIONS, Scene, SynthObject, parse_attributes

_EXISTS = re.compile(r"Is there an? (.+) in the image\?")
WORLD = {"images": 40, "seed": 7, "size": 32, "workers": 1, "progress": False}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate(SynthConfig(out=str(root), **WORLD))
    return load_manifest(root)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _finehard(world, split: str) -> list[dict]:
    return json.loads(world.path("finehard", split).read_text())


def _truth(world, split: str) -> dict[str, set[str]]:
    """image stem -> present "colour shape" categories, from the FineHARD phrases."""
    out = {}
    for item in _finehard(world, split):
        attrs = [parse_attributes(b["short_expr"]) for b in item["bbox_info"]]
        out[Path(item["f_path"]).stem] = {f"{a['colour']} {a['shape']}" for a in attrs}
    return out


def test_manifest_lists_existing_artifacts_and_disjoint_splits(world):
    def paths(node):
        return [p for v in node.values() for p in (paths(v) if isinstance(v, dict) else [v])]

    for relative in paths(world["files"]):
        assert (world.root / relative).exists(), relative
    assert sum(s["count"] for s in world["splits"].values()) == world["num_images"] == 40
    stems = [{p.stem for p in world.path("images", split).glob("*.png")} for split in world["splits"]]
    assert sum(map(len, stems)) == len(set().union(*stems)) == 40
    stats = world["stats"]
    assert sum(stats["objects_per_image"].values()) == 40 and set(stats["objects_per_image"]) <= set("12345")
    assert set(stats["negatives_per_box"]) <= {"0", "10"}


def test_same_seed_gives_byte_identical_output(world, tmp_path):
    generate(SynthConfig(out=str(tmp_path / "again"), **{**WORLD, "workers": 2}))
    assert _digest(tmp_path / "again") == _digest(world.root)
    other = tmp_path / "other"
    generate(SynthConfig(out=str(other), **{**WORLD, "seed": 8}))
    assert (other / "finehard/train.json").read_bytes() != world.path("finehard", "train").read_bytes()


def test_finehard_reads_back_and_collates(world):
    dataset = FineHardDataset(world.finehard_config("train"))
    assert len(dataset) == world["splits"]["train"]["count"]
    assert dataset.records[0].image_path.is_file()  # "grit-20m/data-12m/" prefix stripped against the root
    assert dataset.records[0].short_caption.startswith("a photo of ")
    tokenizer = AutoTokenizer.from_pretrained(world.path("tokenizers", "clip"))
    batch = FGClipCollator(tokenizer)([dataset[i] for i in range(8)])
    assert batch["pixel_values"].shape == (8, 3, 32, 32)
    assert batch["boxes"].shape[0] == int(batch["box_counts"].sum()) == batch["box_input_ids"].shape[0]
    assert batch["hard_input_ids"].shape[0] == 11 * batch["hard_box_index"].shape[0]
    assert batch["long_input_ids"].shape[1] <= 248 and batch["short_input_ids"].shape[1] <= 77
    assert world["stats"]["token_lengths"]["long_caption_max"] <= 248


def test_hard_negatives_are_false_for_their_object_and_keep_the_noun(world):
    n_checked = 0
    for split in world["splits"]:
        for item in _finehard(world, split):
            for box in item["bbox_info"]:
                truth = parse_attributes(box["short_expr"])
                negatives = list(box["short_expr_negs"].values())
                assert len(negatives) == (10 if box["flag_short_neg"] else 0)
                assert len(set(negatives)) == len(negatives)
                for negative in negatives:
                    attrs = parse_attributes(negative)
                    assert attrs["shape"] == truth["shape"]
                    assert 1 <= sum(attrs[a] != truth[a] for a in ATTRIBUTES) <= 3
                    n_checked += 1
    assert n_checked > 500


def test_fgovd_levels_change_exactly_k_attributes_and_trivial_changes_the_noun(world):
    finehard = {Path(i["f_path"]).stem: i for i in _finehard(world, "test")}
    for level, k in (("hard", 1), ("medium", 2), ("easy", 3), ("trivial", None)):
        rows = [json.loads(line) for line in world.path("fgovd", "test", level).read_text().splitlines()]
        assert rows and all(len(r["pos_expression"]) == 1 and len(r["neg_expression"]) == 10 for r in rows)
        for row in rows:
            pos = parse_attributes(row["pos_expression"][0])
            x, y, w, h = row["bbox"]
            boxes = [b["bbox"][:4] for b in finehard[Path(row["img_path"]).stem]["bbox_info"]]
            assert any(np.allclose([x / 32, y / 32, (x + w) / 32, (y + h) / 32], b, atol=0.01) for b in boxes)
            for negative in row["neg_expression"]:
                attrs = parse_attributes(negative)
                if k is None:
                    assert attrs["shape"] != pos["shape"]
                else:
                    assert attrs["shape"] == pos["shape"] and sum(attrs[a] != pos[a] for a in ATTRIBUTES) == k


def test_pope_answers_are_true_and_negatives_follow_pope_definitions(world):
    truth = _truth(world, "test")
    frequency = Counter(c for cats in _truth(world, "train").values() for c in cats)
    for name in ("random", "popular", "adversarial"):
        rows = datasets.load_dataset("parquet", data_files=str(world.path("pope", name)), split="train")
        assert set(rows.column_names) >= {
            "question_id",
            "question",
            "answer",
            "image",
            "category",
            "id",
            "image_source",
        }
        by_image = defaultdict(list)
        for row in rows:
            category = _EXISTS.fullmatch(row["question"]).group(1)
            assert row["answer"] == ("yes" if category in truth[row["image_source"]] else "no")
            assert row["category"] == name and row["image"].size == (32, 32)
            by_image[row["image_source"]].append((category, row["answer"]))
        if any(len(cats) >= 3 for cats in truth.values()):  # POPE's image choice: at least 3 objects
            assert all(len(truth[stem]) >= 3 for stem in by_image)
        for stem, qa in by_image.items():
            answers = Counter(a for _, a in qa)
            assert answers["yes"] == answers["no"] == min(3, len(truth[stem]))
            if name == "popular":
                absent = sorted((c for c in frequency if c not in truth[stem]), key=lambda c: (-frequency[c], c))
                negatives = {c for c, a in qa if a == "no"}
                assert negatives == set(absent[: len(negatives)]) or all(frequency[c] == 0 for c in negatives)


def test_mme_rows_are_yes_no_pairs_per_question_id(world):
    rows = datasets.load_dataset("parquet", data_files=str(world.path("mme")), split="train")
    groups = defaultdict(list)
    for row in rows:
        groups[row["question_id"]].append(row)
    assert {r["category"] for r in rows} == {"existence", "count", "position", "color", "shape", "size"}
    assert len({r["category"] for r in list(rows)[:12]}) == 6  # categories interleaved in file order
    truth = _truth(world, "test")
    for qid, pair in groups.items():
        assert sorted(r["answer"] for r in pair) == ["No", "Yes"], qid
        assert all(r["question"].endswith(" Please answer yes or no.") for r in pair)
        if pair[0]["category"] == "existence":
            for r in pair:
                category = _EXISTS.fullmatch(r["question"].removesuffix(" Please answer yes or no.")).group(1)
                assert (category in truth[qid.split("/")[1].removesuffix(".png")]) == (r["answer"] == "Yes")


def test_stage1_llava_and_retrieval_read_back_through_readers(world):
    pairs = LongCaptionPairsDataset(world.pairs_config("val"))
    sample = pairs[0]
    assert sample["pixel_values"].shape == (3, 32, 32) and sample["short_caption"].startswith("a photo of ")
    sharegpt = LongCaptionPairsDataset(
        PairsConfig(str(world.path("retrieval", "long")), image_root=str(world.image_root), image_size=32)
    )
    assert len(sharegpt) == world["splits"]["test"]["count"]
    assert sharegpt[0]["long_caption"].startswith("The image shows")
    instruct = LlavaJsonDataset(world.llava_config("instruct"))
    text_only = [i for i, r in enumerate(instruct.records) if r.image_path is None]
    assert text_only and instruct[text_only[0]]["pixel_values"] is None
    assert instruct[0]["pixel_values"].shape == (3, 32, 32) and instruct[0]["conversations"][0]["value"].startswith(
        "<image>\n"
    )
    assert len(LlavaJsonDataset(world.llava_config("align"))) == world["splits"]["train"]["count"]
    short = json.loads(world.path("retrieval", "short").read_text())
    per_image = Counter(a["image_id"] for a in short["annotations"])
    assert set(per_image.values()) == {5}
    boxcls = json.loads(world.path("boxcls", "test").read_text())
    assert len(boxcls["categories"]) == 48 and {"images", "annotations", "categories"} <= set(boxcls)


def test_heldout_combinations_never_occur_outside_the_heldout_split(world):
    held = {f"{c} {s}" for c, s in HELDOUT_COMBINATIONS}
    files = [world.path(kind, split) for kind in ("finehard", "stage1") for split in ("train", "val", "test")]
    files += [world.path("llava", name) for name in ("align", "instruct", "instruct_val")]
    files += [world.path("fgovd", "test", level) for level in ("hard", "medium", "easy", "trivial")]
    files += [world.path("retrieval", kind) for kind in ("long", "short")]
    texts = [p.read_text() for p in files]
    for kind in ("random", "popular", "adversarial"):
        texts += datasets.load_dataset("parquet", data_files=str(world.path("pope", kind)), split="train")["question"]
    texts += datasets.load_dataset("parquet", data_files=str(world.path("mme")), split="train")["question"]
    words = [text.lower().replace(",", " ").replace(".", " ").replace("?", " ").split() for text in texts]
    for tokens in words:
        for colour, shape in HELDOUT_COMBINATIONS:
            # "<colour> <shape>" or "<colour> <pattern> <shape>" (a phrase may put the pattern in between)
            for i, token in enumerate(tokens[:-1]):
                if token == colour:
                    assert shape not in tokens[i + 1 : i + 3], (colour, shape, " ".join(tokens[max(0, i - 3) : i + 4]))
    heldout = _truth(world, "heldout")
    assert heldout and all(cats & held for cats in heldout.values())


def test_attributes_are_visible_at_64px():
    objects = []
    for k, (pattern, size) in enumerate(
        [
            ("plain", "large"),
            ("striped", "large"),
            ("dotted", "large"),
            ("checkered", "large"),
            ("plain", "small"),
            ("plain", "medium"),
        ]
    ):
        row, col = divmod(k, 3)
        side = {"small": 0.15, "medium": 0.22, "large": 0.30}[size]
        box = (col / 3 + 0.01, row / 3 + 0.01, col / 3 + 0.01 + side, row / 3 + 0.01 + side)
        objects.append(SynthObject("square", "blue", size, pattern, k, box))
    pixels = np.asarray(render_scene(Scene(0, "train", "light gray", "plain", tuple(objects)), 64, 0)).astype(int)
    blue = np.array(COLOURS["blue"])

    def region(obj):  # the inner half of the object's box
        x1, y1, x2, y2 = (round(v * 64) for v in obj.box)
        dx, dy = (x2 - x1) // 4, (y2 - y1) // 4
        return pixels[y1 + dy : y2 - dy, x1 + dx : x2 - dx].reshape(-1, 3)

    blue_share = [float((np.abs(region(o) - blue).sum(1) < 60).mean()) for o in objects]
    assert blue_share[0] > 0.95 and all(share < 0.85 for share in blue_share[1:4])
    assert len({round(s, 2) for s in blue_share[1:4]}) == 3  # stripes, dots and checks cover different shares
    widths = [round((o.box[2] - o.box[0]) * 64) for o in (objects[4], objects[5], objects[0])]
    assert widths[0] + 3 < widths[1] and widths[1] + 3 < widths[2]


def test_synth_cli_writes_a_world(tmp_path, capsys):
    from fgclip_lmm.cli import main

    assert (
        main(["synth", "--out", str(tmp_path / "w"), "--images", "12", "--seed", "1", "--size", "24", "--no-progress"])
        == 0
    )
    assert load_manifest(tmp_path / "w")["num_images"] == 12
    assert "objects_per_image" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "w"), "--images", "12", "--no-progress"]) == 2  # not empty


def test_world_files_stream_through_datasets(world):
    from fgclip_lmm.data.streaming import stream_finehard, stream_llava

    streamed = list(stream_llava(world.llava_config("instruct")))
    mapped = LlavaJsonDataset(world.llava_config("instruct"))
    assert [s["id"] for s in streamed] == [r.id for r in mapped.records]
    assert sum(s["pixel_values"] is None for s in streamed) == sum(r.image_path is None for r in mapped.records) > 0
    boxes = [len(s["box_texts"]) for s in stream_finehard(world.finehard_config("val"))]
    assert boxes == [len(r.short_exprs) for r in FineHardDataset(world.finehard_config("val")).records]


def test_benchmark_files_read_back_through_the_eval_readers(world):
    from fgclip_lmm.data.bad_records import BadRecordPolicy
    from fgclip_lmm.eval.clip.formats import read_coco_instances, read_fgovd
    from fgclip_lmm.eval.clip.formats_global import read_coco_captions, read_sharegpt4v

    policy = BadRecordPolicy("error")
    levels = ("hard", "medium", "easy", "trivial")
    fgovd = read_fgovd([world.path("fgovd", "test", lv) for lv in levels], world.image_root, policy)
    n_boxes = world["counts"]["splits"]["test"]["objects"]
    assert len(fgovd.boxes) == 4 * n_boxes and all(len(n) == 10 for n in fgovd.negatives)
    assert all(p.is_file() for p in fgovd.boxes.images)
    boxcls = read_coco_instances(world.path("boxcls", "heldout"), world.image_root, policy)
    assert len(boxcls.labels) == world["counts"]["splits"]["heldout"]["objects"] and len(boxcls.classnames) == 48
    n_test = world["splits"]["test"]["count"]
    short = read_coco_captions(world.path("retrieval", "short"), world.image_root, policy, None)
    assert len(short.images) == n_test and len(short.texts) == 5 * n_test
    long = read_sharegpt4v(world.path("retrieval", "long"), world.image_root, policy, None)
    assert len(long.images) == len(long.texts) == n_test and all(p.is_file() for p in long.images)
