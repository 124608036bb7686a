"""The datagen steps end to end with injected fake generators / detectors (deterministic assertions):
retries and rejections, resume after an interruption, sharding + merge, settings guard, bad inputs, check, CLI."""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from fgclip_lmm.data.bad_records import BadRecordError
from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset
from fgclip_lmm.datagen.check import CheckConfig, check
from fgclip_lmm.datagen.cli import main
from fgclip_lmm.datagen.ground import GroundConfig, run_ground
from fgclip_lmm.datagen.negatives import NegativesConfig, run_negatives
from fgclip_lmm.datagen.recaption import RecaptionConfig, run_recaption
from fgclip_lmm.datagen.runner import Shard, merge, parts_dir
from fgclip_lmm.errors import InputError

LONG = ("The image shows a large red circle with stripes in the top left corner and a small blue square "
        "with dots at the bottom, drawn on a plain light gray background, picture {tag}.")


@pytest.fixture()
def world(datagen_world):
    return datagen_world


def _digest(image: Image.Image) -> int:
    return zlib.crc32(image.tobytes())


def _digests(folder: Path) -> list[int]:
    out = []
    for path in sorted(folder.rglob("*.png")):
        with Image.open(path) as image:
            out.append(_digest(image.convert("RGB")))
    return out


class FakeCaptioner:
    """Image 0 (sorted) always loops (rejected); image 1 is empty when greedy, fine when sampled; others fine."""

    def __init__(self, folder: Path, fail_after: int | None = None):
        digests = _digests(folder)
        self.always_bad, self.greedy_empty = digests[0], digests[1]
        self.seen: list[int] = []
        self.fail_after = fail_after

    def __call__(self, images, prompt, options):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        out = []
        for image in images:
            d = _digest(image)
            self.seen.append(d)
            if "short caption" in prompt:
                out.append(f"A red circle and a blue square, picture {d % 97}.\nignored second line")
            elif d == self.always_bad:
                out.append("a red circle " * 12)
            elif d == self.greedy_empty and not options.do_sample:
                out.append("   ")
            else:
                out.append(LONG.format(tag=d % 97))
        return out


def _recaption(world, out, generate, **kw):
    config = RecaptionConfig(image_root=str(world.images), out=str(out), batch_size=2, progress=False, **kw)
    return run_recaption(config, generate)


def test_recaption_retries_rejects_and_writes_readable_records(world, tmp_path) -> None:
    fake = FakeCaptioner(world.images)
    result = _recaption(world, tmp_path / "cap.json", fake)
    n = world.num_images
    assert result.merged and result.processed == n
    stats = result.stats
    assert stats["ok"] == n - 1 and stats["rejected"] == {"long:repetition": 1}
    assert stats["counts"]["long_degenerate:repetition"] == 3  # greedy + 2 sampled retries, then rejected
    assert stats["counts"]["long_degenerate:empty"] == 1  # greedy empty, the first retry passes
    assert stats["counts"]["long_attempts"] == n + 3 and stats["counts"]["short_attempts"] == n - 1
    records = json.loads((tmp_path / "cap.json").read_text())
    assert [sorted(r) for r in records] == [["bbox_info", "caption", "f_path", "short_caption"]] * (n - 1)
    assert all(r["caption"].startswith("The image shows a large red circle") for r in records)
    assert all(re.fullmatch(r"A red circle and a blue square, picture \d+\.", r["short_caption"]) for r in records)
    dataset = FineHardDataset(FineHardConfig(data_path=str(tmp_path / "cap.json"), image_root=str(world.images)))
    assert len(dataset) == n - 1 and dataset[0]["long_caption"].startswith("The image shows")


def test_recaption_from_records_keeps_their_short_captions(world, tmp_path) -> None:
    names = sorted(p.relative_to(world.images).as_posix() for p in world.images.rglob("*.png"))[1:4]
    rows = [{"f_path": names[0], "short_caption": "a red circle"}, {"f_path": names[1], "short_caption": " "},
            {"f_path": names[2], "short_caption": "two blue squares"}, {"short_caption": "no image"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = _recaption(world, tmp_path / "cap.json", FakeCaptioner(world.images), input=str(tmp_path / "in.jsonl"),
                        short_source="input", short_min_words=2)
    assert result.stats["rejected"] == {"short:input_empty": 1, "input:missing_field": 1}
    records = json.loads((tmp_path / "cap.json").read_text())
    assert [(r["f_path"], r["short_caption"]) for r in records] == [(names[0], "a red circle"),
                                                                   (names[2], "two blue squares")]


def test_negatives_prompt_placeholders_are_checked() -> None:
    with pytest.raises(ValueError, match="must contain"):
        NegativesConfig(input="x", out="y", rules_only=True, prompt="no placeholder")
    with pytest.raises(ValueError, match="bad placeholder"):
        NegativesConfig(input="x", out="y", rules_only=True, prompt="{phrase} as {json}")


def test_interrupted_rerun_skips_finished_items_and_gives_the_same_file(world, tmp_path) -> None:
    _recaption(world, tmp_path / "a.json", FakeCaptioner(world.images))
    crashing = FakeCaptioner(world.images, fail_after=10)
    with pytest.raises(KeyboardInterrupt):
        _recaption(world, tmp_path / "b.json", crashing)
    part = parts_dir(tmp_path / "b.json") / "rank00000.jsonl"
    finished = len(part.read_text().splitlines())
    assert 0 < finished < world.num_images and not (tmp_path / "b.json").exists()
    with open(part, "a") as handle:  # a crash in the middle of a write
        handle.write('{"index": 5, "f_path": "trai')
    resumed = FakeCaptioner(world.images)
    result = _recaption(world, tmp_path / "b.json", resumed)
    assert result.processed == world.num_images - finished
    assert len(set(resumed.seen)) == world.num_images - finished  # only unfinished images were captioned
    assert (tmp_path / "b.json").read_bytes() == (tmp_path / "a.json").read_bytes()
    again = FakeCaptioner(world.images)
    assert _recaption(world, tmp_path / "b.json", again).processed == 0 and again.seen == []


def test_ranks_take_strided_slices_and_the_last_one_merges(world, tmp_path, monkeypatch) -> None:
    _recaption(world, tmp_path / "single.json", FakeCaptioner(world.images))
    config = RecaptionConfig(image_root=str(world.images), out=str(tmp_path / "two.json"), batch_size=2,
                             progress=False)
    first = run_recaption(config, FakeCaptioner(world.images), shard=Shard(0, 2))
    assert not first.merged and first.processed == (world.num_images + 1) // 2
    assert not (tmp_path / "two.json").exists()
    with pytest.raises(InputError, match="unfinished"):
        merge(tmp_path / "two.json")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert Shard.from_env() == Shard(1, 2)
    second = run_recaption(config, FakeCaptioner(world.images))
    assert second.merged and second.processed == world.num_images // 2
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        Shard.from_env()


def test_changed_settings_are_refused_unless_overwrite(world, tmp_path) -> None:
    _recaption(world, tmp_path / "c.json", FakeCaptioner(world.images))
    with pytest.raises(ValueError, match=r"\['long_prompt'\]"):
        _recaption(world, tmp_path / "c.json", FakeCaptioner(world.images), long_prompt="Describe it.")
    result = _recaption(world, tmp_path / "c.json", FakeCaptioner(world.images), long_prompt="Describe it.",
                        overwrite=True)
    assert result.processed == world.num_images and result.stats["settings"]["long_prompt"] == "Describe it."


def fake_detector(images, queries):
    """Query j of each image: a box in grid cell j, scored 0.9 for even j and 0.3 (below 0.4) for odd j."""
    out = []
    for qs in queries:
        boxes = [[(j % 3) / 3, (j // 3) / 3, (j % 3 + 1) / 3, (j // 3 + 1) / 3] for j in range(len(qs))]
        out.append({"boxes": torch.tensor(boxes),
                    "scores": torch.tensor([0.9 if j % 2 == 0 else 0.3 for j in range(len(qs))]),
                    "labels": torch.arange(len(qs))})
    return out


def fake_chat(prompts, options):
    """Per phrase: the positive itself, a noun-less line, a dropped attribute, and three attribute changes."""
    replies = []
    for prompt in prompts:
        phrase = re.search(r"Phrase: (.*)$", prompt).group(1)
        noun = phrase.split()[-1]
        replies.append("\n".join([phrase, "something else", " ".join(phrase.split()[1:]), f"striped {noun}",
                                  f"wooden {noun}", f"1. tiny plastic {noun}"]))
    return replies


def test_ground_then_negatives_end_to_end_give_trainable_records(world, tmp_path) -> None:
    _recaption(world, tmp_path / "cap.json", FakeCaptioner(world.images))
    ground = GroundConfig(input=str(tmp_path / "cap.json"), image_root=str(world.images),
                          out=str(tmp_path / "grounded.json"), progress=False, batch_size=4)
    stats = run_ground(ground, detect=fake_detector).stats
    grounded = json.loads((tmp_path / "grounded.json").read_text())
    # phrases of LONG: "large red circle" (query 0, kept), "small blue square" (query 1, score 0.3: dropped)
    assert stats["counts"]["phrases"] == 2 * len(grounded) and stats["counts"]["boxes"] == len(grounded)
    for record in grounded:
        assert record["bbox_info"] == [{"bbox": [0.0, 0.0, 0.3333, 0.3333, 0.9], "short_expr": "large red circle",
                                        "long_expr": "a large red circle with stripes", "flag_short_neg": 0,
                                        "short_expr_negs": {}}]
    neg = NegativesConfig(input=str(tmp_path / "grounded.json"), out=str(tmp_path / "final.json"), model="fake",
                          progress=False)
    stats = run_negatives(neg, chat=fake_chat).stats
    counts, boxes = stats["counts"], len(grounded)
    assert counts["boxes_full"] == boxes and counts["llm_candidates"] == 6 * boxes
    assert counts["llm_accepted"] == 3 * boxes and counts["lexicon_accepted"] == 7 * boxes
    assert counts["llm_rejected:same_as_positive"] == counts["llm_rejected:missing_noun"] == boxes
    assert counts["llm_rejected:drops_only"] == boxes
    final = json.loads((tmp_path / "final.json").read_text())
    box = final[0]["bbox_info"][0]
    assert box["flag_short_neg"] == 1 and list(box["short_expr_negs"]) == [f"{k:02d}" for k in range(10)]
    assert list(box["short_expr_negs"].values())[:4] == ["striped circle", "wooden circle", "tiny plastic circle",
                                                        "small red circle"]
    dataset = FineHardDataset(FineHardConfig(data_path=str(tmp_path / "final.json"), image_root=str(world.images)))
    sample = dataset[0]
    assert sample["boxes"].shape == (1, 4) and len(sample["hard_texts"]) == 11
    report = check(CheckConfig(data=str(tmp_path / "final.json"), image_root=str(world.images)))
    assert report["negatives"]["per_box"] == {"10": boxes} and report["records"]["rejected"] == 0


def _write(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def test_bad_input_records_are_counted_or_raise(world, tmp_path) -> None:
    good = json.loads(world.finehard.read_text())[0]
    inputs = _write(tmp_path / "in.json", [good, {**good, "caption": ""}, {**good, "f_path": "nope/missing.png"}])
    config = GroundConfig(input=str(inputs), image_root=str(world.image_root), out=str(tmp_path / "g.json"),
                          progress=False)
    stats = run_ground(config, detect=fake_detector).stats
    assert stats["ok"] == 1 and stats["rejected"] == {"input:empty_caption": 1, "input:missing_image": 1}
    with pytest.raises(BadRecordError, match=r"in\.json record 1, field 'caption'"):
        run_ground(GroundConfig(input=str(inputs), image_root=str(world.image_root), out=str(tmp_path / "e.json"),
                                on_bad_record="error", progress=False), detect=fake_detector)
    boxed = {**good, "bbox_info": [
        {"bbox": [0.1, 0.1, 0.4, 0.4, 0.9], "short_expr": "red car", "long_expr": "a red car", "flag_short_neg": 0},
        {"bbox": [0.5, 0.5, 1.5, 0.9, 0.9], "short_expr": "blue car", "long_expr": "a blue car", "flag_short_neg": 0}]}
    neg = NegativesConfig(input=str(_write(tmp_path / "boxed.json", [boxed])), out=str(tmp_path / "n.json"),
                          rules_only=True, progress=False)
    stats = run_negatives(neg).stats
    assert stats["counts"]["input_box:box_out_of_range"] == 1 and stats["counts"]["boxes_full"] == 1
    record = json.loads((tmp_path / "n.json").read_text())[0]
    assert [b["short_expr"] for b in record["bbox_info"]] == ["red car"]
    assert next(iter(record["bbox_info"][0]["short_expr_negs"].values())) == "orange car"


def _box(short: str, negs: int | None, bbox=(0.1, 0.1, 0.5, 0.5)) -> dict:
    box = {"bbox": [*bbox, 0.8], "short_expr": short, "long_expr": f"a {short} here",
           "flag_short_neg": int(negs is not None)}
    if negs is not None:
        box["short_expr_negs"] = {str(k): f"neg {k} {short}" for k in range(negs)}
    return box


def test_check_reports_exact_statistics_on_a_hand_made_file(tmp_path) -> None:
    long_caption = " ".join(["word"] * 250)
    records = [
        {"f_path": "a.jpg", "caption": "one two three four", "short_caption": "red car",
         "bbox_info": [_box("red car", 10), _box("blue cup", None)]},
        {"f_path": "b.jpg", "caption": long_caption, "short_caption": "x",
         "bbox_info": [_box("green hat", 9), _box("bad box", 10, (0.5, 0.5, 1.2, 0.9)), _box("tall tree", 10)]},
        {"f_path": "c.jpg", "short_caption": "no long caption", "bbox_info": []},
        {"f_path": "d.jpg", "caption": "fine", "short_caption": "  ", "bbox_info": []},
        {"f_path": "e.jpg", "caption": "five boxes", "short_caption": "s",
         "bbox_info": [_box(f"box {k}", None) for k in range(5)]},
    ]
    folder = tmp_path / "set"
    folder.mkdir()
    _write(folder / "part1.json", records)
    (folder / "part2.json").write_text("[{broken")
    report = check(CheckConfig(data=str(folder), out=str(tmp_path / "report.json")))
    assert report["records"] == {"read": 5, "valid": 3, "rejected": 2}
    assert report["rejected_by_reason"] == {"box_out_of_range": 1, "empty_caption": 1, "invalid_json": 1,
                                            "missing_field": 1, "wrong_negative_count": 1}
    assert report["boxes"] == {"total": 8, "per_image": {"1": 1, "2": 1, "5": 1}, "mean_per_image": 2.667,
                               "beyond_max_anns": 1, "max_anns": 4}
    assert report["negatives"] == {"flag_short_neg": {"0": 6, "1": 2}, "per_box": {"0": 6, "10": 2}}
    lengths = report["lengths"]
    assert report["length_unit"] == "words"
    assert lengths["caption"] == {"count": 3, "min": 2, "mean": 85.33, "p50": 4, "p95": 250, "max": 250,
                                  "over_limit": 1}
    assert lengths["short_caption"]["min"] == 4 and lengths["short_caption"]["max"] == 5  # "a photo of " + caption
    assert lengths["negative"]["count"] == 20 and lengths["negative"]["max"] == 4
    assert json.loads((tmp_path / "report.json").read_text()) == report


def test_check_counts_tokens_with_a_tokenizer(tmp_path) -> None:
    from fgclip_lmm.data.tokenizers import train_clip_tokenizer

    texts = ["a red car on the road", "a photo of a red car", "a blue cup"]
    tokenizer = train_clip_tokenizer(texts * 3, tmp_path / "tok", vocab_size=600, min_frequency=1)
    path = _write(tmp_path / "one.json", [{"f_path": "a.jpg", "caption": texts[0], "short_caption": "red car",
                                           "bbox_info": [_box("blue cup", None)]}])
    report = check(CheckConfig(data=str(path), tokenizer=str(tmp_path / "tok")))
    assert report["length_unit"] == "tokens"
    assert report["lengths"]["caption"]["max"] == len(tokenizer(texts[0])["input_ids"])
    assert report["lengths"]["short_caption"]["max"] == len(tokenizer("a photo of red car")["input_ids"])


def test_cli_steps_merge_and_errors(world, tmp_path, capsys) -> None:
    grounded = json.loads(world.finehard.read_text())[:2]
    for record in grounded:
        record["bbox_info"] = [_box("large red circle", None), _box("man", None, (0.5, 0.5, 0.9, 0.9))]
    path = _write(tmp_path / "grounded.json", grounded)
    out = tmp_path / "final.json"
    assert main(["negatives", "--input", str(path), "--out", str(out), "--rules-only", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    final = json.loads(out.read_text())
    assert [b["flag_short_neg"] for b in final[0]["bbox_info"]] == [1, 0]  # "man" has no attribute to swap
    assert json.loads((tmp_path / "final.stats.json").read_text())["counts"]["box_short:no_attribute"] == 2
    before = out.read_bytes()
    out.unlink()
    assert main(["merge", "--out", str(out)]) == 0 and out.read_bytes() == before
    assert "2 of 2 items" in capsys.readouterr().out
    assert main(["check", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["negatives"]["flag_short_neg"] == {"0": 2, "1": 2}
    assert main(["ground", "--input", str(tmp_path / "missing.json"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "g.json"), "--detector", "none"]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["merge", "--out", str(tmp_path / "never.json")]) == 2


@pytest.mark.slow
def test_torchrun_ranks_write_the_single_process_file(world, tmp_path) -> None:
    import os
    import subprocess
    import sys

    records = json.loads(world.finehard.read_text())
    for record in records:
        record["bbox_info"] = [_box("large red circle", None), _box("small wooden box", None, (0.5, 0.5, 0.9, 0.9))]
    path = _write(tmp_path / "grounded.json", records)
    single = tmp_path / "single.json"
    assert main(["negatives", "--input", str(path), "--out", str(single), "--rules-only", "--no-progress"]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    run = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "0", "-m", "fgclip_lmm.cli", "datagen", "negatives",
         "--input", str(path), "--out", str(tmp_path / "ranks.json"), "--rules-only", "--batch-size", "1",
         "--no-progress"], check=False, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    parts = sorted(p.name for p in parts_dir(tmp_path / "ranks.json").glob("rank*.jsonl"))
    assert parts == ["rank00000.jsonl", "rank00001.jsonl"]
    assert (tmp_path / "ranks.json").read_bytes() == single.read_bytes()
