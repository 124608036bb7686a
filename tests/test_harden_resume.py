"""eval-lmm loses no work: `--out` is checked writable before anything loads, and a run SIGKILLed half-way
resumes from the answers saved under OUT/cache (the rerun computes only the rest; results equal a clean run)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from harden_cli import run_cli, run_cli_batch


@pytest.fixture()
def tiny_export(tiny_llava_export: Path) -> Path:
    return tiny_llava_export


def _answers(out: Path) -> tuple[list, list]:
    samples = [(row["doc_id"], row["filtered_resps"]) for row in
               map(json.loads, (out / "samples_fgclip_pope_random.jsonl").read_text().splitlines())]
    scores = [json.loads(line) for line in (out / "yes_no_scores.jsonl").read_text().splitlines()]
    return sorted(samples), sorted(scores, key=lambda s: s["doc_id"])


def test_a_killed_evaluation_resumes_without_recomputing(tiny_export, tmp_path) -> None:
    args = ["eval-lmm", "--model", tiny_export, "--tasks", "fgclip_pope_random", "--limit", "12", "--batch-size", "1"]
    killed = run_cli(*args, "--out", tmp_path / "run", env={"FGCLIP_FAULT_KILL_AFTER_REQUESTS": "6"})
    assert killed.code == -signal.SIGKILL, killed.err[-2000:]
    assert not (tmp_path / "run" / "eval_lmm.json").exists()
    saved = [line for part in (tmp_path / "run" / "cache").glob("responses-*.jsonl")
             for line in part.read_text().splitlines()]
    assert len(saved) == 8  # chunks of 4 requests (4 x batch size), killed after the chunk that reached 6

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    resumed, clean, unwritable = run_cli_batch([
        ([*args, "--out", tmp_path / "run"], {}),
        ([*args, "--out", tmp_path / "clean"], {}),
        (["eval-lmm", "--model", tmp_path / "no_such_model", "--tasks", "fgclip_pope_random",
          "--out", blocker / "out"], {})])
    assert resumed.code == 0 and clean.code == 0, resumed.err[-2000:] + clean.err[-2000:]
    header = json.loads((tmp_path / "run" / "eval_lmm.json").read_text())["header"]
    assert header["response_cache"]["hits"] == 8 and header["response_cache"]["computed"] == 4
    assert json.loads((tmp_path / "clean" / "eval_lmm.json").read_text())["header"]["response_cache"]["hits"] == 0
    assert _answers(tmp_path / "run") == _answers(tmp_path / "clean")  # answers and P(yes) restored exactly

    # an unwritable --out fails first (before the missing checkpoint, tasks or model), in one line
    assert unwritable.code == 2
    assert unwritable.error_lines == [f"fgclip-lmm eval-lmm: error: --out {blocker / 'out'}: not a writable directory "
                                      "(Not a directory)"]
