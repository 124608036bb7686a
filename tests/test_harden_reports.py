"""Every skip is reported: eval-clip and datagen print the bad-record report (counts per reason and the first
messages, naming file, record and field) at the end of a run and before a "nothing left" error, and write it
as JSON beside their outputs. Images above the pixel budget are the bad record `image_too_large`. The command
lines run through the real dispatcher, together in one subprocess."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from harden_cli import run_cli_batch
from PIL import Image

NEGS = {str(k): f"blue square {k}" for k in range(10)}


def _finehard(f_path: str, **extra) -> dict:
    record = {"f_path": f_path, "caption": "a red circle on grey", "short_caption": "red circle",
              "bbox_info": [{"bbox": [0.1, 0.1, 0.6, 0.6], "short_expr": "red circle", "long_expr": "a red circle",
                             "flag_short_neg": 1, "short_expr_negs": NEGS}]}
    return {**record, **extra}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    from fgclip_lmm.data.tokenizers import train_clip_tokenizer
    from fgclip_lmm.model import FGCLIPModel
    from fgclip_lmm.model.configuration_fgclip import FGCLIPConfig

    root = tmp_path_factory.mktemp("reports")
    images = root / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (24, 24), (60 * i, 90, 200)).save(images / f"{i}.png")
    Image.new("RGB", (40, 40), (10, 200, 10)).save(images / "big.png")  # 1600 px, over a 1000 px budget
    tok = train_clip_tokenizer([f"picture number {i} of a red circle" for i in range(20)], root / "model",
                               vocab_size=600)
    torch.manual_seed(0)
    FGCLIPModel(FGCLIPConfig.tiny(vocab_size=len(tok))).eval().save_pretrained(root / "model")

    def share(names):
        return [{"image": n, "conversations": [{"from": "human", "value": "<image>"},
                                               {"from": "gpt", "value": f"picture number {i} of a red circle"}]}
                for i, n in enumerate(names)]

    (root / "some_missing.json").write_text(json.dumps(share(["0.png", "gone_a.png", "1.png", "2.png", "gone_b.png"])))
    (root / "all_missing.json").write_text(json.dumps(share(["gone_a.png", "gone_b.png"])))
    (root / "with_big.json").write_text(json.dumps(share(["0.png", "big.png", "1.png"])))
    (root / "mixed.json").write_text(json.dumps([
        _finehard("0.png"), _finehard("../escape.png"), _finehard("1.png", caption=""), _finehard("gone.png"),
        _finehard("2.png")]))
    (root / "all_bad.json").write_text(json.dumps([_finehard("gone.png"), _finehard("/etc/hostname")]))
    return {"root": root, "images": images}


@pytest.fixture(scope="module")
def ran(setup) -> dict:
    root, images = setup["root"], setup["images"]

    def eval_clip(data: str, out: str) -> list:
        return ["eval-clip", "--model", root / "model", "--bench", "retrieval", "--data", root / data,
                "--image-root", images, "--on-bad-record", "skip", "--out", root / out, "--no-progress"]

    def negatives(data: str, out: str) -> list:
        return ["datagen", "negatives", "--input", root / data, "--images", images, "--out", root / out,
                "--rules-only", "--no-progress"]

    budget = {"FGCLIP_MAX_IMAGE_PIXELS": "1000"}
    names = ["partial", "nothing", "dg_partial", "dg_nothing", "budget_skip", "budget_error"]
    return dict(zip(names, run_cli_batch([
        (eval_clip("some_missing.json", "ec1"), {}), (eval_clip("all_missing.json", "ec2"), {}),
        (negatives("mixed.json", "dg1/out.json"), {}), (negatives("all_bad.json", "dg2/out.json"), {}),
        (eval_clip("with_big.json", "ec3"), budget),
        ([a if a != "skip" else "error" for a in eval_clip("with_big.json", "ec4")], budget)]), strict=True))


def test_eval_clip_and_datagen_report_every_skip(setup, ran) -> None:
    root, images = setup["root"], setup["images"]
    partial, nothing, dg_partial, dg_nothing = (ran[k] for k in ("partial", "nothing", "dg_partial", "dg_nothing"))

    # eval-clip, some images missing: evaluated on the rest, the report printed at the end and written as JSON
    assert partial.code == 0, partial.err
    assert "bad records skipped: 2" in partial.out and "missing_image: 2" in partial.out
    assert f"e.g. {images / 'gone_a.png'}: image file not found; used by {root / 'some_missing.json'} record 1" \
        in partial.out
    report = json.loads((root / "ec1" / "bad_records.json").read_text())
    assert report["total_skipped"] == 2 and report["skipped"] == {"missing_image": 2}
    assert len(report["examples"]["missing_image"]) == 2
    assert json.loads((root / "ec1" / "retrieval.json").read_text())["results"]["image_to_text"]["n"] == 3

    # eval-clip, nothing left: the report comes first, then one line; the JSON report is written too
    assert nothing.code == 2
    (line,) = nothing.error_lines
    assert line == (f"fgclip-lmm eval-clip: error: --data {root / 'all_missing.json'}: no usable records: "
                    f"2 bad records skipped (missing_image 2); report in {root / 'ec2' / 'bad_records.json'}")
    assert nothing.err.index("bad records skipped: 2") < nothing.err.index(line)
    assert json.loads((root / "ec2" / "bad_records.json").read_text())["skipped"] == {"missing_image": 2}

    # datagen: each rejection reason with its first messages, printed and kept in OUT.stats.json
    assert dg_partial.code == 0, dg_partial.err
    stats = json.loads((root / "dg1" / "out.stats.json").read_text())
    assert stats["ok"] == 2 and stats["rejected"] == {"input:empty_caption": 1, "input:missing_image": 1,
                                                      "input:path_outside_root": 1}
    mixed = root / "mixed.json"
    assert stats["examples"]["input:empty_caption"] == [f"{mixed} record 2, field 'caption': text is empty "
                                                        "[empty_caption]"]
    assert stats["examples"]["input:path_outside_root"][0].startswith(f"{mixed} record 1, field 'f_path': "
                                                                      "'../escape.png' resolves outside")
    for reason, examples in stats["examples"].items():
        assert f"  {reason}: 1" in dg_partial.out and f"    e.g. {examples[0]}" in dg_partial.out

    # datagen, every item rejected: report printed, files written, then one line and exit 2
    assert dg_nothing.code == 2
    (line,) = dg_nothing.error_lines
    assert line.startswith("fgclip-lmm datagen: error: nothing left: every one of the 2 items was rejected")
    assert f"report in {root / 'dg2' / 'out.stats.json'}" in line
    assert dg_nothing.out.index("e.g.") >= 0 and "input:missing_image: 1" in dg_nothing.out
    assert json.loads((root / "dg2" / "out.json").read_text()) == []


def test_images_over_the_pixel_budget_are_bad_records(setup, ran) -> None:
    root, images = setup["root"], setup["images"]
    skipped, strict = ran["budget_skip"], ran["budget_error"]
    assert skipped.code == 0, skipped.err
    report = json.loads((root / "ec3" / "bad_records.json").read_text())
    assert report["skipped"] == {"image_too_large": 1}
    assert f"{images / 'big.png'}: 40x40 = 0.0016 MP exceeds the 0.001 MP pixel budget" in \
        report["examples"]["image_too_large"][0]
    assert json.loads((root / "ec3" / "retrieval.json").read_text())["results"]["image_to_text"]["n"] == 2
    assert strict.code == 2
    (line,) = strict.error_lines
    assert f"{images / 'big.png'}" in line and "pixel budget" in line and line.endswith("[image_too_large]")


def test_the_budget_is_checked_from_the_header_before_decoding(tmp_path) -> None:
    import struct
    import zlib

    from fgclip_lmm.data.images import ImageTooLargeError, load_rgb

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # a 10000 x 10000 PNG header (100 MP) with one byte of pixel data: decoding would fail, the budget never decodes
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    with pytest.raises(ImageTooLargeError, match=r"bomb.png: 10000x10000 = 100 MP exceeds the 50 MP pixel budget"):
        load_rgb(bomb)
    with pytest.raises(ImageTooLargeError, match="exceeds the 0.0005 MP pixel budget"):
        load_rgb(setup_image(tmp_path), max_pixels=500)
    assert load_rgb(setup_image(tmp_path), max_pixels=0).size == (24, 24)  # 0 = no limit


def setup_image(tmp_path: Path) -> Path:
    path = tmp_path / "small.png"
    Image.new("RGB", (24, 24), (1, 2, 3)).save(path)
    return path


def test_training_readers_skip_images_over_the_budget(setup) -> None:
    from fgclip_lmm.data.bad_records import BadRecordError
    from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset

    root, images = setup["root"], setup["images"]
    data = root / "budget.json"
    data.write_text(json.dumps([_finehard("0.png"), _finehard("big.png")]))
    config = FineHardConfig(str(data), image_root=str(images), image_size=8, on_bad_record="skip",
                            max_image_pixels=1000)
    dataset = FineHardDataset(config)
    assert dataset[1]["record_id"] == f"{data} record 0"  # the oversized image is skipped, the next one used
    assert dataset.policy.report.skipped == {"image_too_large": 1}
    strict = FineHardDataset(FineHardConfig(str(data), image_root=str(images), image_size=8, max_image_pixels=1000))
    with pytest.raises(BadRecordError, match=r"record 1, field 'f_path': .*big.png: 40x40 .*\[image_too_large\]"):
        strict[1]
