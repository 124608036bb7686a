"""File-level mistakes in record files, through `fgclip-lmm datagen check` / `negatives` (the FineHARD reader):
a UTF-8 BOM is ignored, a pretty-printed JSON object is one error for the file, empty files are named, a file
listed twice is read once with a warning, and extensions match in any letter case."""
from __future__ import annotations

import json
from pathlib import Path

from harden_cli import run_cli_batch

from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.data.records_io import read_records, resolve_data_files

NEGS = {str(k): f"blue square {k}" for k in range(10)}


def _record(i: int) -> dict:
    return {"f_path": f"{i}.png", "caption": f"a red circle number {i}", "short_caption": "red circle",
            "bbox_info": [{"bbox": [0.1, 0.1, 0.6, 0.6], "short_expr": "red circle", "long_expr": "a red circle",
                           "flag_short_neg": 1, "short_expr_negs": NEGS}]}


def test_file_level_mistakes_are_reported_once_and_named(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a_bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([_record(0), _record(1)]).encode())
    (data / "b_upper.JSON").write_text(json.dumps([_record(2)]))
    (data / "c_upper.JSONL").write_text(json.dumps(_record(3)) + "\n" + json.dumps(_record(4)) + "\n")
    pretty = data / "d_pretty.json"
    pretty.write_text(json.dumps({"records": [_record(5), _record(6)]}, indent=2))
    lines = len(pretty.read_text().splitlines())
    (data / "e_empty.jsonl").write_text("\n\n")
    (data / "f_brackets.json").write_text("[]")
    listing = tmp_path / "list.TXT"
    listing.write_text("data/a_bom.json\ndata/b_upper.JSON\n./data/a_bom.json\n")

    checked, listed, strict = run_cli_batch([
        (["datagen", "check", data, "--json"], {}),
        (["datagen", "check", listing, "--json"], {}),
        (["datagen", "negatives", "--input", pretty, "--out", tmp_path / "n.json", "--rules-only", "--no-progress",
          "--on-bad-record", "error"], {})])

    assert checked.code == 0, checked.err
    report = json.loads(checked.out)
    assert [Path(f).name for f in report["files"]] == ["a_bom.json", "b_upper.JSON", "c_upper.JSONL", "d_pretty.json",
                                                       "e_empty.jsonl", "f_brackets.json"]
    assert report["records"] == {"read": 5, "valid": 5, "rejected": 0}  # BOM file and upper-case names included
    assert report["rejected_by_reason"] == {"empty_file": 2, "invalid_json": 1}
    assert report["examples"]["invalid_json"] == [
        f"{pretty}: top-level JSON must be an array of records or JSONL (got a JSON object spanning {lines} lines); "
        "whole file dropped [invalid_json]"]
    assert report["examples"]["empty_file"] == [f"{data / 'e_empty.jsonl'}: the file is empty [empty_file]",
                                                f"{data / 'f_brackets.json'}: the JSON array holds no records "
                                                "[empty_file]"]

    assert listed.code == 0, listed.err
    assert json.loads(listed.out)["records"]["read"] == 3  # a_bom.json once
    assert f"warning: {tmp_path / 'data' / 'a_bom.json'}: listed more than once in the data path; read once" \
        in listed.err.replace("/./", "/")

    assert strict.code == 2
    assert strict.error_lines == [f"fgclip-lmm datagen: error: {pretty}: top-level JSON must be an array of records "
                                  f"or JSONL (got a JSON object spanning {lines} lines); whole file dropped "
                                  "[invalid_json]"]


def test_jsonl_keeps_per_line_errors_and_a_broken_pretty_object_is_one_error(tmp_path) -> None:
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps(_record(0)) + "\n{broken\n" + json.dumps(_record(1)) + "\n")
    policy = BadRecordPolicy("skip")
    assert [i for i, _ in read_records(jsonl, policy)] == [0, 2]
    assert policy.report.skipped == {"invalid_json": 1}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"records": [_record(0)]}, indent=2)[:-3])  # a pretty-printed object, cut short
    policy = BadRecordPolicy("skip")
    assert list(read_records(broken, policy)) == []
    assert policy.report.skipped == {"invalid_json": 1}
    assert "no line of the file is a JSON object" in policy.report.examples["invalid_json"][0]
    assert resolve_data_files([jsonl, tmp_path / "x.jsonl"]) == [jsonl]
