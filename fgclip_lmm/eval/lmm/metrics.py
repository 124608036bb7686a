"""Metrics for yes/no hallucination and attribute tasks, and the scoring functions of the `fgclip_attr_*` tasks.

* `binary_metrics`: accuracy, precision, recall, F1 with "yes" as the positive class (POPE's definition), plus the
  **model's** yes-rate (share of predictions that are "yes"; lmms-eval's `pope_yes_ratio` is the ground-truth share,
  docs/lmms_eval.md, "POPE and MME scoring") and the share of answers that are neither yes nor no.
* `auroc`: area under the ROC curve of a score against binary labels (Mann-Whitney U, ties count one half).
* `pair_metrics`: MME-style accuracy, acc+ (both questions of a yes/no pair right) and score = 100·(acc + acc+).
* `attr_process_results` / `attr_aggregate_*`: lmms-eval hooks for the attribute tasks (YAML `!function`). The
  prediction is parsed with lmms-eval's own MME parser, so any model's answers are scored the MME way.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lmms_eval.tasks.mme.utils import parse_pred_ans

YES, NO = "yes", "no"


@dataclass(frozen=True)
class BinaryMetrics:
    """POPE-style metrics over one set of yes/no questions."""

    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_rate: float
    gt_yes_rate: float
    unparsed_rate: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def binary_metrics(predictions: Sequence[str | None], labels: Sequence[str]) -> BinaryMetrics:
    """Metrics for predictions in {"yes", "no", other/None} against labels in {"yes", "no"}.

    An answer that is neither yes nor no counts as wrong, and as neither a positive nor a negative prediction
    (the way lmms-eval's POPE aggregators treat it).
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("no samples to score")
    bad = sorted({label for label in labels if label not in (YES, NO)})
    if bad:
        raise ValueError(f"labels must be 'yes' or 'no', got {bad}")
    tp = sum(p == YES and g == YES for p, g in zip(predictions, labels, strict=True))
    fp = sum(p == YES and g == NO for p, g in zip(predictions, labels, strict=True))
    fn = sum(p == NO and g == YES for p, g in zip(predictions, labels, strict=True))
    correct = sum(p == g for p, g in zip(predictions, labels, strict=True))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    n = len(labels)
    return BinaryMetrics(
        n=n,
        accuracy=correct / n,
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        yes_rate=sum(p == YES for p in predictions) / n,
        gt_yes_rate=sum(g == YES for g in labels) / n,
        unparsed_rate=sum(p not in (YES, NO) for p in predictions) / n,
    )


def auroc(scores: Sequence[float], labels: Sequence[int | bool]) -> float:
    """ROC AUC of `scores` for binary `labels` (1 = positive); NaN when one class is absent."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = sum(1 for label in labels if label)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@dataclass(frozen=True)
class PairMetrics:
    """MME-style metrics over yes/no question pairs (0-1 accuracies; score on MME's 0-200 scale)."""

    n_questions: int
    n_pairs: int
    accuracy: float
    acc_plus: float
    score: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def pair_metrics(records: Iterable[Mapping[str, Any]]) -> PairMetrics:
    """`records` carry `question_id` (the pair id) and `score` (1.0 right / 0.0 wrong).

    Accuracy counts every question; acc+ only pairs whose two questions were both answered (an incomplete pair,
    e.g. cut by `--limit`, is left out of acc+).
    """
    by_pair: dict[Any, list[float]] = defaultdict(list)
    scores = []
    for record in records:
        by_pair[record["question_id"]].append(float(record["score"]))
        scores.append(float(record["score"]))
    if not scores:
        raise ValueError("no samples to score")
    complete = [v for v in by_pair.values() if len(v) == 2]
    accuracy = sum(scores) / len(scores)
    acc_plus = sum(min(v) for v in complete) / len(complete) if complete else math.nan
    return PairMetrics(len(scores), len(complete), accuracy, acc_plus, 100.0 * (accuracy + acc_plus))


# -- lmms-eval hooks for the fgclip_attr_* tasks ------------------------------------------------------------------
ATTR_METRICS = ("attr_accuracy", "attr_acc_plus", "attr_score")


def attr_process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Score one attribute question: MME's answer parser, compared with the doc's Yes/No answer."""
    prediction = parse_pred_ans(results[0])
    truth = str(doc["answer"]).lower().strip().rstrip(".")
    if truth not in (YES, NO):
        raise ValueError(f"attribute question {doc.get('question_id')!r} has answer {doc['answer']!r}, not Yes/No")
    record = {
        "question_id": doc["question_id"],
        "category": doc["category"],
        "score": 1.0 if prediction == truth else 0.0,
        "prediction": prediction,
        "ground_truth": truth,
    }
    return {name: dict(record) for name in ATTR_METRICS}


def attr_aggregate_accuracy(results: list[dict[str, Any]]) -> float:
    return pair_metrics(results).accuracy


def attr_aggregate_acc_plus(results: list[dict[str, Any]]) -> float:
    return pair_metrics(results).acc_plus


def attr_aggregate_score(results: list[dict[str, Any]]) -> float:
    return pair_metrics(results).score
