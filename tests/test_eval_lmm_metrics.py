"""POPE metrics, model yes-rate, AUROC, MME-style pairs and the eval-lmm report against hand-computed values."""
from __future__ import annotations

import math

import pytest
from lmms_eval.tasks.pope.utils import pope_aggregate_f1_score, pope_process_results

from fgclip_lmm.eval.lmm.metrics import attr_process_results, auroc, binary_metrics, pair_metrics
from fgclip_lmm.eval.lmm.report import build_report, to_markdown


def test_binary_metrics_by_hand() -> None:
    # TP=2 (0,1), FN=1 (2), FP=1 (4), TN=1 (3), unparsed on a yes (5)
    preds = ["yes", "yes", "no", "no", "yes", "maybe"]
    truth = ["yes", "yes", "yes", "no", "no", "yes"]
    m = binary_metrics(preds, truth)
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)  # FN counts only explicit "no" answers (lmms-eval's POPE)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.yes_rate == pytest.approx(3 / 6)  # the model's, not the ground truth's
    assert m.gt_yes_rate == pytest.approx(4 / 6)
    assert m.unparsed_rate == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="yes' or 'no"):
        binary_metrics(["yes"], ["maybe"])


def test_auroc_by_hand_with_ties() -> None:
    # positives 0.9, 0.4, 0.4; negatives 0.4, 0.1 -> pairs: (0.9>0.4)=1, (0.9>0.1)=1, (0.4=0.4)=.5 x2, (0.4>0.1)=1 x2
    assert auroc([0.9, 0.4, 0.4, 0.4, 0.1], [1, 1, 1, 0, 0]) == pytest.approx(5 / 6)
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert math.isnan(auroc([0.3, 0.4], [1, 1]))


def test_pair_metrics_by_hand() -> None:
    records = [
        {"question_id": "a", "score": 1.0}, {"question_id": "a", "score": 1.0},  # both right
        {"question_id": "b", "score": 1.0}, {"question_id": "b", "score": 0.0},
        {"question_id": "c", "score": 0.0},  # incomplete pair: counts for accuracy only
    ]
    m = pair_metrics(records)
    assert (m.n_questions, m.n_pairs) == (5, 2)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.acc_plus == pytest.approx(1 / 2)
    assert m.score == pytest.approx(100 * (3 / 5 + 1 / 2))


def test_attr_process_results_uses_mme_parser() -> None:
    doc = {"question_id": "color/1", "category": "color", "answer": "Yes"}
    assert attr_process_results(doc, ["Yes, it is."])["attr_accuracy"]["score"] == 1.0
    assert attr_process_results(doc, ["no"])["attr_accuracy"]["score"] == 0.0
    with pytest.raises(ValueError, match="not Yes/No"):
        attr_process_results({**doc, "answer": "blue"}, ["yes"])


def _pope_samples(task: str, preds: list[str], truth: list[str]) -> list[dict]:
    samples = []
    for i, (p, t) in enumerate(zip(preds, truth, strict=True)):
        doc = {"question_id": f"{task}-{i}", "answer": t}
        samples.append({"doc_id": i, "doc": doc, "filtered_resps": [p], **pope_process_results(doc, [p])})
    return samples


def test_report_pope_mean_f1_yes_rate_and_auroc_by_hand() -> None:
    splits = {
        # F1: P=1, R=1/2 -> 2/3
        "fgclip_pope_random": (["yes", "no", "no", "no"], ["yes", "yes", "no", "no"]),
        # F1: P=2/3, R=1 -> 0.8
        "fgclip_pope_popular": (["yes", "yes", "yes", "no"], ["yes", "yes", "no", "no"]),
        # F1: all right -> 1
        "fgclip_pope_adversarial": (["yes", "yes", "no", "no"], ["yes", "yes", "no", "no"]),
    }
    samples = {task: _pope_samples(task, p, t) for task, (p, t) in splits.items()}
    results = {"samples": samples,
               "results": {t: {"pope_f1_score,none": pope_aggregate_f1_score([s["pope_f1_score"] for s in ss])}
                           for t, ss in samples.items()}}
    # P(yes) per question: perfect ranking on random, inverted on popular, no scores for adversarial
    scores = {("fgclip_pope_random", i): p for i, p in enumerate([0.9, 0.8, 0.2, 0.1])}
    scores |= {("fgclip_pope_popular", i): p for i, p in enumerate([0.1, 0.2, 0.8, 0.9])}
    report = build_report(results, scores)
    block = report["pope"]["fgclip_pope"]
    f1 = {t: s["f1"] for t, s in block["splits"].items()}
    assert f1 == pytest.approx({"fgclip_pope_random": 2 / 3, "fgclip_pope_popular": 0.8,
                                "fgclip_pope_adversarial": 1.0})
    for entry in block["splits"].values():
        assert entry["lmms_eval_f1"] == pytest.approx(entry["f1"])  # same numbers as lmms-eval's aggregator
    assert block["mean_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    # pooled over 12 questions: TP=5, FP=1, FN=1
    assert block["pooled"]["f1"] == pytest.approx(5 / 6)
    assert block["pooled"]["yes_rate"] == pytest.approx(6 / 12)
    assert block["splits"]["fgclip_pope_popular"]["yes_rate"] == pytest.approx(3 / 4)
    assert block["splits"]["fgclip_pope_popular"]["gt_yes_rate"] == pytest.approx(2 / 4)
    assert report["calibration"]["fgclip_pope_random"]["auroc_p_yes"] == 1.0
    assert report["calibration"]["fgclip_pope_popular"]["auroc_p_yes"] == 0.0
    assert report["calibration"]["pooled_pope"]["n_scored"] == 8
    assert "fgclip_pope_adversarial" not in report["calibration"]
    text = to_markdown(report, {"model": "m"})
    assert f"**{(2 / 3 + 0.8 + 1.0) / 3:.4f}**" in text and "model yes-rate" in text
