"""Readers and the bad-record policy: every bad-record class in both modes, file formats, prefix handling,
lazy image failures inside DataLoader workers, streaming, and LLaVA / stage-1 record validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fgclip_lmm.data.bad_records import BadRecordError, BadRecordPolicy
from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset
from fgclip_lmm.data.llava_json import LlavaJsonConfig, LlavaJsonDataset
from fgclip_lmm.data.pairs import LongCaptionPairsDataset, PairsConfig
from fgclip_lmm.data.streaming import stream_finehard

NEGS = {f"k{i}": f"blue striped circle {i}" for i in range(10)}


def _box(**override) -> dict:
    box = {
        "bbox": [0.1, 0.2, 0.5, 0.6, 0.8],
        "short_expr": "red circle",
        "long_expr": "a big red circle",
        "flag_short_neg": 1,
        "short_expr_negs": dict(NEGS),
    }
    return {**box, **override}


def _items(n: int = 4) -> list[dict]:
    return [
        {
            "f_path": f"grit-20m/data-12m/imgs/{i}.png",
            "caption": f"long caption {i}",
            "short_caption": f"thing {i}",
            "bbox_info": [_box(), _box(flag_short_neg=0, short_expr_negs={})],
        }
        for i in range(n)
    ]


@pytest.fixture()
def image_root(tmp_path) -> Path:
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.new("RGB", (20, 10), (50 * i, 100, 150)).save(tmp_path / "imgs" / f"{i}.png")
    return tmp_path


def _config(path: Path, root: Path, mode: str, **kw) -> FineHardConfig:
    return FineHardConfig(str(path), image_root=str(root), image_size=8, on_bad_record=mode, **kw)


def _set(items, i, key, value):
    items[i][key] = value
    return items


# name -> (mutation of the item list, reason, field named in the error, records kept, boxes kept in record 1)
BAD_RECORD_CASES = {
    "missing_image": (lambda it: _set(it, 1, "f_path", "imgs/nope.png"), "missing_image", "f_path", 3, None),
    "missing_field": (lambda it: (it[1].pop("caption"), it)[1], "missing_field", "caption", 3, None),
    "box_out_of_range": (
        lambda it: (it[1]["bbox_info"].__setitem__(0, _box(bbox=[0.1, 0.2, 1.4, 0.6])), it)[1],
        "box_out_of_range",
        "bbox_info[0].bbox",
        4,
        1,
    ),
    "box_x1_gt_x2": (
        lambda it: (it[1]["bbox_info"].__setitem__(0, _box(bbox=[0.6, 0.2, 0.5, 0.6])), it)[1],
        "box_degenerate",
        "bbox_info[0].bbox",
        4,
        1,
    ),
    "box_zero_area": (
        lambda it: (it[1]["bbox_info"].__setitem__(1, _box(bbox=[0.3, 0.2, 0.3, 0.6])), it)[1],
        "box_degenerate",
        "bbox_info[1].bbox",
        4,
        1,
    ),
    "wrong_negatives": (
        lambda it: (it[1]["bbox_info"][0]["short_expr_negs"].pop("k3"), it)[1],
        "wrong_negative_count",
        "bbox_info[0].short_expr_negs",
        4,
        1,
    ),
    "empty_caption": (lambda it: _set(it, 1, "short_caption", "   "), "empty_caption", "short_caption", 3, None),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORD_CASES))
def test_bad_record_classes_in_json_files(case, image_root):
    mutate, reason, field, kept, boxes_kept = BAD_RECORD_CASES[case]
    path = image_root / "part.json"
    path.write_text(json.dumps(mutate(_items())))
    with pytest.raises(BadRecordError, match=rf"part\.json record 1, field '{re.escape(field)}'.*\[{reason}\]") as info:
        FineHardDataset(_config(path, image_root, "error"))
    assert info.value.reason.value == reason and info.value.index == 1
    dataset = FineHardDataset(_config(path, image_root, "skip"))
    assert dataset.policy.report.skipped == {reason: 1}
    assert len(dataset) == kept
    if boxes_kept is not None:
        assert len(dataset.records[1].short_exprs) == boxes_kept and len(dataset.records[0].short_exprs) == 2


def _jsonl(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize(
    "reason,bad_line",
    [
        ("invalid_json", b'{"f_path": "imgs/1.png", "caption": '),
        ("invalid_utf8", b'{"f_path": "imgs/1.png", "caption": "\xff\xfe"}'),
    ],
)
def test_invalid_json_and_utf8_lines(reason, bad_line, image_root):
    lines = [json.dumps(item).encode() for item in _items()]
    lines[2] = bad_line
    path = image_root / "part.jsonl"
    _jsonl(path, lines)
    with pytest.raises(BadRecordError, match=rf"part\.jsonl record 2.*\[{reason}\]"):
        FineHardDataset(_config(path, image_root, "error", strip_prefixes=("grit-20m/data-12m/",)))
    dataset = FineHardDataset(_config(path, image_root, "skip"))
    assert dataset.policy.report.skipped == {reason: 1} and len(dataset) == 3


def test_broken_json_array_drops_the_file_under_skip(image_root):
    path = image_root / "array.json"
    path.write_text(json.dumps(_items())[:-20])
    other = image_root / "ok.json"
    other.write_text(json.dumps(_items(2)))
    with pytest.raises(BadRecordError, match=r"array\.json: .*whole JSON array dropped"):
        FineHardDataset(_config(image_root, image_root, "error"))
    dataset = FineHardDataset(_config(image_root, image_root, "skip"))
    assert len(dataset) == 2 and dataset.policy.report.skipped == {"invalid_json": 1}


def test_all_file_layouts_give_the_same_records(image_root, tmp_path):
    items = _items()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.json").write_text(json.dumps(items[:2]))
    (tmp_path / "a" / "two.jsonl").write_text(json.dumps(items[2:]))  # an array inside a .jsonl file
    (tmp_path / "lines.jsonl").write_text("\n".join(json.dumps(i) for i in items))
    pq.write_table(pa.Table.from_pylist(items), tmp_path / "rows.parquet")
    (tmp_path / "list.txt").write_text("a/one.json\n# comment\na/two.jsonl\n")

    def summary(path):
        ds = FineHardDataset(_config(path, image_root, "error"))
        return [
            (r.image_path.name, r.caption, r.short_caption, r.boxes.tolist(), r.short_exprs, r.negatives)
            for r in ds.records
        ]

    reference = summary(tmp_path / "lines.jsonl")
    assert len(reference) == 4 and reference[0][2] == "a photo of thing 0"
    assert reference[0][5] == [list(NEGS.values()), None]  # negatives in key order; flag 0 -> none
    for path in ("a", "list.txt", "rows.parquet", "a/one.json"):
        got = summary(tmp_path / path)
        assert got == reference[: len(got)], path


def test_prefix_max_boxes_and_caption_prefix_settings(image_root):
    items = _items(1)
    items[0]["bbox_info"] = [_box(short_expr=f"box {j}") for j in range(6)]
    path = image_root / "p.json"
    path.write_text(json.dumps(items))
    ds = FineHardDataset(_config(path, image_root, "error", max_boxes=3, short_caption_prefix=""))
    assert ds.records[0].image_path == image_root / "imgs" / "0.png"
    assert ds.records[0].short_exprs == ["box 0", "box 1", "box 2"] and ds.records[0].short_caption == "thing 0"
    with pytest.raises(BadRecordError, match="missing_image"):
        FineHardDataset(_config(path, image_root, "error", strip_prefixes=()))


def test_corrupt_image_in_skip_mode_never_stops_an_epoch(image_root):
    (image_root / "imgs" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    path = image_root / "p.json"
    path.write_text(json.dumps(_items()))
    with pytest.raises(BadRecordError, match=r"p\.json record 2, field 'f_path'.*corrupt_image"):
        FineHardDataset(_config(path, image_root, "error"))[2]
    dataset = FineHardDataset(_config(path, image_root, "skip"))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list)
    for _ in range(2):  # two epochs: counted once, replaced by the next index both times
        ids = [s["record_id"] for batch in loader for s in batch]
        assert len(ids) == 4 and ids.count(f"{path} record 3") == 2
    assert dataset.policy.report.skipped == {"corrupt_image": 1}
    assert "corrupt_image: 1" in dataset.policy.report.summary()


def test_missing_image_found_lazily_falls_back(image_root):
    path = image_root / "p.json"
    path.write_text(json.dumps(_items()))
    dataset = FineHardDataset(_config(path, image_root, "skip", check_image_paths=False))
    (image_root / "imgs" / "3.png").unlink()
    assert dataset[3]["record_id"] == f"{path} record 0"
    assert dataset.policy.report.skipped == {"missing_image": 1}


def test_streaming_matches_map_style_and_applies_policy(image_root):
    items = _items()
    items[1]["bbox_info"][0]["bbox"] = [0.5, 0.5, 0.4, 0.9]
    path = image_root / "s.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in items))
    config = _config(path, image_root, "skip")
    mapped = FineHardDataset(config)
    streamed = list(stream_finehard(config, BadRecordPolicy("skip")))
    assert [s["long_caption"] for s in streamed] == [r.caption for r in mapped.records]
    assert [len(s["box_texts"]) for s in streamed] == [2, 1, 2, 2]
    assert torch.equal(streamed[0]["pixel_values"], mapped[0]["pixel_values"])
    with pytest.raises(BadRecordError, match="box_degenerate"):
        list(stream_finehard(_config(path, image_root, "error")))
    halves = [list(stream_finehard(config, BadRecordPolicy("skip"), rank=r, world_size=2)) for r in range(2)]
    assert sorted(s["long_caption"] for h in halves for s in h) == sorted(r.caption for r in mapped.records)


def test_long_caption_pairs_sharegpt4v_and_plain(image_root):
    sharegpt = [
        {
            "id": "0",
            "image": "imgs/0.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": "A red disc. It sits left."},
            ],
        },
        {"id": "1", "image": "imgs/1.png", "conversations": [{"from": "human", "value": "<image>\nDescribe."}]},
    ]
    (image_root / "sg.json").write_text(json.dumps(sharegpt))
    with pytest.raises(BadRecordError, match=r"sg\.json record 1, field 'conversations'"):
        LongCaptionPairsDataset(PairsConfig(str(image_root / "sg.json"), image_root=str(image_root)))
    ds = LongCaptionPairsDataset(
        PairsConfig(str(image_root / "sg.json"), image_root=str(image_root), on_bad_record="skip", image_size=8)
    )
    assert (ds[0]["long_caption"], ds[0]["short_caption"]) == ("A red disc. It sits left.", "A red disc.")
    plain = [{"image": "imgs/2.png", "long_caption": "long", "short_caption": ""}]
    (image_root / "plain.jsonl").write_text(json.dumps(plain[0]))
    with pytest.raises(BadRecordError, match="field 'short_caption'.*empty_caption"):
        LongCaptionPairsDataset(PairsConfig(str(image_root / "plain.jsonl"), image_root=str(image_root)))


def test_llava_json_validation_and_image_less_records(image_root):
    rows = [
        {
            "id": 1,
            "image": "imgs/0.png",
            "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Red"}],
        },
        {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {
            "id": 2,
            "image": "imgs/1.png",
            "conversations": [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red"}],
        },
        {"id": 3, "image": "imgs/1.png", "conversations": [{"from": "gpt", "value": "<image>\nRed"}]},
        {"image": "imgs/1.png", "conversations": []},
    ]
    path = image_root / "llava.json"
    path.write_text(json.dumps(rows))
    no_token = r"llava\.json record 2, field 'conversations': 1 image\(s\) given but no '<image>'"
    with pytest.raises(BadRecordError, match=no_token):
        LlavaJsonDataset(LlavaJsonConfig(str(path), image_root=str(image_root)))
    ds = LlavaJsonDataset(LlavaJsonConfig(str(path), image_root=str(image_root), image_size=8, on_bad_record="skip"))
    assert len(ds) == 2 and ds.policy.report.skipped == {"missing_field": 3}
    assert ds[0]["pixel_values"].shape == (3, 8, 8) and ds[0]["id"] == "1" and ds[0]["has_image"]
    assert ds[1]["pixel_values"] is None and not ds[1]["has_image"]


def test_policy_rejects_unknown_mode():
    with pytest.raises(ValueError, match="on_bad_record"):
        BadRecordPolicy("ignore")
