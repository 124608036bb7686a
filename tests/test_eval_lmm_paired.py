"""Paired statistics (`fgclip_lmm.eval.lmm.paired`) against hand-computed values, and `eval-lmm --compare`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fgclip_lmm.eval.lmm.cli import main
from fgclip_lmm.eval.lmm.paired import (
    bootstrap_diff_interval,
    compare_outcomes,
    mcnemar_exact,
    paired_compare,
    question_outcomes,
)


def test_mcnemar_exact_by_hand() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 2 * C(5,0) / 2^5
    assert mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)  # 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact(2, 7) == pytest.approx(2 * (1 + 9 + 36) / 512)
    assert mcnemar_exact(3, 3) == 1.0  # 2 * 42/64 > 1: capped
    assert mcnemar_exact(4, 6) == mcnemar_exact(6, 4)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_bootstrap_interval_degenerate_and_normal_approximation() -> None:
    assert bootstrap_diff_interval([True] * 10, [True] * 10) == (0.0, 0.0)
    assert bootstrap_diff_interval([True] * 10, [False] * 10) == (1.0, 1.0)
    # 200 questions: 30 only A right, 10 only B right, 160 concordant -> diff 0.1, per-question variance of the
    # difference 0.2 - 0.1^2 = 0.19, so the interval is about 0.1 +- 1.96 * sqrt(0.19 / 200) = [0.0396, 0.1604]
    a = np.array([1] * 30 + [0] * 10 + [1] * 80 + [0] * 80, dtype=bool)
    b = np.array([0] * 30 + [1] * 10 + [1] * 80 + [0] * 80, dtype=bool)
    low, high = bootstrap_diff_interval(a, b, resamples=2000, seed=0)
    half = 1.96 * math.sqrt(0.19 / 200)
    assert low == pytest.approx(0.1 - half, abs=0.012) and high == pytest.approx(0.1 + half, abs=0.012)
    assert (low, high) == bootstrap_diff_interval(a, b, resamples=2000, seed=0)  # fixed seed, same interval
    order = np.random.default_rng(1).permutation(200)
    assert (low, high) == bootstrap_diff_interval(a[order], b[order], resamples=2000, seed=0)  # pairs, not order
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_diff_interval([True], [True, False])


def test_bootstrap_matches_resampling_questions() -> None:
    """The multinomial shortcut has the distribution of resampling questions with replacement."""
    rng = np.random.default_rng(5)
    a, b = rng.random(60) < 0.7, rng.random(60) < 0.5
    idx = rng.integers(0, 60, size=(20000, 60))
    naive = np.percentile(a[idx].mean(1) - b[idx].mean(1), [2.5, 97.5])
    low, high = bootstrap_diff_interval(a, b, resamples=20000, seed=0)
    assert low == pytest.approx(naive[0], abs=0.02) and high == pytest.approx(naive[1], abs=0.02)


def test_paired_compare_counts() -> None:
    result = paired_compare([1, 1, 1, 0, 1, 0], [0, 1, 0, 0, 1, 1], "t", "color")
    assert (result.n, result.only_a_right, result.only_b_right) == (6, 2, 1)
    assert result.accuracy_a == pytest.approx(4 / 6) and result.difference == pytest.approx(1 / 6)
    assert result.p_mcnemar == pytest.approx(1.0)  # 2 * (1 + 3) / 8 capped


def _sample(doc_id: int, right: bool, category: str = "color") -> dict:
    return {"doc_id": doc_id, "attr_accuracy": {"question_id": f"q{doc_id // 2}", "category": category,
                                                 "score": 1.0 if right else 0.0}}


def _pope(doc_id: int, prediction: str, truth: str) -> dict:
    return {"doc_id": doc_id, "pope_accuracy": {"prediction": prediction, "ground_truth": truth}}


def test_question_outcomes_and_compare_outcomes() -> None:
    samples = {"fgclip_attr_color": [_sample(0, True), _sample(1, False)],
               "fgclip_pope_random": [_pope(0, "yes", "yes"), _pope(1, "yes", "no")], "other": [{"doc_id": 0}]}
    outcomes = question_outcomes(samples)
    assert outcomes == {"fgclip_attr_color": {"color": {0: True, 1: False}},
                        "fgclip_pope_random": {"all": {0: True, 1: False}}}
    flipped = {"fgclip_attr_color": {"color": {0: False, 1: True, 7: True}}}
    (row,) = compare_outcomes(outcomes, flipped)  # only shared tasks, categories and documents
    assert (row.task, row.n, row.only_a_right, row.only_b_right, row.difference) == ("fgclip_attr_color", 2, 1, 1, 0)


def _write_run(path: Path, rights: list[bool]) -> Path:
    path.mkdir(parents=True)
    with (path / "samples_fgclip_attr_color.jsonl").open("w") as f:
        for i, right in enumerate(rights):
            f.write(json.dumps(_sample(i, right)) + "\n")
    return path


def test_compare_cli_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _write_run(tmp_path / "a", [True] * 12 + [False] * 8)
    b = _write_run(tmp_path / "b", [False] * 10 + [True] * 2 + [False] * 8)
    out = tmp_path / "cmp"
    assert main(["--compare", str(a), str(b), "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    (row,) = report["categories"]
    assert (row["n"], row["only_a_right"], row["only_b_right"]) == (20, 10, 0)
    assert row["difference"] == pytest.approx(0.5) and row["p_mcnemar"] == pytest.approx(2 / 1024)
    assert row["ci_low"] > 0 and row["significant"]
    assert "| fgclip_attr_color | color | 20 |" in (out / "compare.md").read_text()
    assert main(["--compare", str(a), str(tmp_path / "missing"), "--out", str(out)]) != 0
    assert "no samples_<task>.jsonl" in capsys.readouterr().err
    (b / "samples_fgclip_attr_color.jsonl").write_text("{not json\n")
    assert main(["--compare", str(a), str(b), "--out", str(out)]) != 0
    assert "samples_fgclip_attr_color.jsonl:1" in capsys.readouterr().err
