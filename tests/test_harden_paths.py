"""Image paths stay inside their root: absolute paths and `..` escapes are the bad record `path_outside_root`
(FineHARD, pairs, LLaVA JSON, datagen) unless `allow_paths_outside_root: true`, and the message never tells
whether the file exists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from harden_cli import run_cli_batch
from PIL import Image

from fgclip_lmm.data.bad_records import BadRecordError
from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset
from fgclip_lmm.data.llava_json import LlavaJsonConfig, LlavaJsonDataset
from fgclip_lmm.data.pairs import LongCaptionPairsDataset, PairsConfig

NEGS = {str(k): f"blue square {k}" for k in range(10)}


def _finehard(f_path: str) -> dict:
    return {"f_path": f_path, "caption": "a red circle on grey", "short_caption": "red circle",
            "bbox_info": [{"bbox": [0.1, 0.1, 0.6, 0.6], "short_expr": "red circle", "long_expr": "a red circle",
                           "flag_short_neg": 1, "short_expr_negs": NEGS}]}


@pytest.fixture()
def layout(tmp_path) -> dict[str, Path]:
    """root/images/ok.png inside the root; secret.png beside the root (reachable as ../secret.png)."""
    root = tmp_path / "root" / "images"
    root.mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "ok.png")
    Image.new("RGB", (16, 16), (30, 30, 200)).save(tmp_path / "root" / "secret.png")
    return {"root": root, "secret": tmp_path / "root" / "secret.png", "tmp": tmp_path}


def test_escapes_and_absolute_paths_are_bad_records_in_every_reader(layout) -> None:
    root, secret, tmp = layout["root"], layout["secret"], layout["tmp"]
    bad = ["../secret.png", str(secret), "sub/../../secret.png"]
    data = tmp / "fh.json"
    data.write_text(json.dumps([_finehard("ok.png")] + [_finehard(p) for p in bad]))
    skip = FineHardDataset(FineHardConfig(str(data), image_root=str(root), image_size=8, on_bad_record="skip"))
    assert [r.index for r in skip.records] == [0]
    assert skip.policy.report.skipped == {"path_outside_root": 3}
    with pytest.raises(BadRecordError, match=r"record 1, field 'f_path': '\.\./secret\.png' resolves outside"):
        FineHardDataset(FineHardConfig(str(data), image_root=str(root), image_size=8))
    allowed = FineHardDataset(FineHardConfig(str(data), image_root=str(root), image_size=8, on_bad_record="skip",
                                             allow_paths_outside_root=True))
    assert [r.index for r in allowed.records] == [0, 1, 2]  # "sub/" does not exist, so record 3 is missing
    assert allowed.records[1].image_path.resolve() == secret.resolve()
    assert allowed.policy.report.skipped == {"missing_image": 1}

    pairs = tmp / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"image": p, "long_caption": "a red circle.", "short_caption": "red"})
                               for p in ["ok.png", *bad]) + "\n")
    reader = LongCaptionPairsDataset(PairsConfig(str(pairs), image_root=str(root), image_size=8, on_bad_record="skip"))
    assert len(reader) == 1 and reader.policy.report.skipped == {"path_outside_root": 3}

    llava = tmp / "llava.json"
    llava.write_text(json.dumps([{"id": str(i), "image": p, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A circle."}]}
        for i, p in enumerate(["ok.png", *bad])]))
    reader = LlavaJsonDataset(LlavaJsonConfig(str(llava), image_root=str(root), image_size=8, on_bad_record="skip"))
    assert len(reader) == 1 and reader.policy.report.skipped == {"path_outside_root": 3}


def test_datagen_cli_refuses_an_escaping_path_without_confirming_the_file(layout) -> None:
    root, tmp = layout["root"], layout["tmp"]
    escape = "../" * 8
    targets = {"exists": f"{escape}etc/passwd", "absent": f"{escape}etc/no_such_file_here"}
    for name, target in targets.items():
        (tmp / f"{name}.json").write_text(json.dumps([_finehard(target)]))
    results = run_cli_batch([(["datagen", "negatives", "--input", tmp / f"{name}.json", "--images", root,
                               "--out", tmp / f"{name}_out.json", "--rules-only", "--no-progress",
                               "--on-bad-record", "error"], {}) for name in targets])
    messages = {}
    for (name, target), result in zip(targets.items(), results, strict=True):
        data = tmp / f"{name}.json"
        assert result.code == 2, result.err
        (line,) = result.error_lines
        assert f"{data} record 0, field 'f_path'" in line and "[path_outside_root]" in line
        assert "allow_paths_outside_root" in line
        messages[name] = line.replace(target, "PATH").replace(name, "NAME")
    assert messages["exists"] == messages["absent"]  # nothing tells whether /etc/passwd exists


def test_datagen_skips_an_escaping_path_and_counts_it(layout) -> None:
    from fgclip_lmm.datagen.negatives import NegativesConfig, run_negatives

    root, tmp = layout["root"], layout["tmp"]
    data = tmp / "mixed.json"
    data.write_text(json.dumps([_finehard("ok.png"), _finehard("../secret.png")]))
    out = tmp / "mixed_out.json"
    run_negatives(NegativesConfig(input=str(data), out=str(out), rules_only=True, image_root=str(root),
                                  progress=False))
    assert [r["f_path"] for r in json.loads(out.read_text())] == ["ok.png"]
    stats = json.loads(out.with_name("mixed_out.stats.json").read_text())
    assert stats["rejected"] == {"input:path_outside_root": 1}
