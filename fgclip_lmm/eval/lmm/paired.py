"""Paired statistics for two answer sets on the same yes/no questions (two LMMs, or one LMM with and without
its image): the accuracy difference with a paired bootstrap interval, and McNemar's exact test.

Each question contributes a pair of outcomes (a right?, b right?). Both statistics depend only on the counts of
the four outcome kinds, so the bootstrap resamples those counts with one multinomial draw per resample (exactly
the distribution of resampling questions with replacement, O(resamples) instead of O(resamples x questions)).
McNemar's exact p-value is the two-sided binomial test of the discordant pairs (b: only A right, c: only B
right) against p = 1/2; scipy is not a dependency, so the binomial tail is summed here with `math.comb`.

`question_outcomes` (eval-lmm samples -> per task and category, doc id -> right/wrong) is the common input of
this module, the blind controls (`controls.py`) and `fgclip-lmm eval-lmm --compare`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAIR_METRIC_KEYS = ("attr_accuracy", "mme_perception_score", "mme_cognition_score")
POPE_KEY = "pope_accuracy"
Outcomes = dict[str, dict[str, dict[int, bool]]]  # task -> category -> doc id -> answered right


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for `b` and `c` discordant pairs: 2 x P(Binom(b+c, 1/2) <= min(b, c)),
    capped at 1 (1.0 when there is no discordant pair)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def bootstrap_diff_interval(a: Sequence[bool], b: Sequence[bool], resamples: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a) - mean(b) over `resamples` paired bootstrap resamples of the questions."""
    a_arr, b_arr = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1 or a_arr.size == 0:
        raise ValueError(f"need two equally long, non-empty outcome lists, got {a_arr.shape} and {b_arr.shape}")
    n = a_arr.size
    only_a = int((a_arr & ~b_arr).sum())
    only_b = int((~a_arr & b_arr).sum())
    probs = np.array([only_a, only_b, n - only_a - only_b], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedResult:
    """One category: accuracies of A and B on the shared questions, A - B with its interval, McNemar's p."""

    task: str
    category: str
    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_low: float
    ci_high: float
    only_a_right: int
    only_b_right: int
    p_mcnemar: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (the 95% call the demo report uses)."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_compare(a: Sequence[bool], b: Sequence[bool], task: str = "", category: str = "",
                   resamples: int = 2000, seed: int = 0) -> PairedResult:
    a_arr, b_arr = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    low, high = bootstrap_diff_interval(a_arr, b_arr, resamples, seed)
    only_a, only_b = int((a_arr & ~b_arr).sum()), int((~a_arr & b_arr).sum())
    return PairedResult(task, category, int(a_arr.size), float(a_arr.mean()), float(b_arr.mean()),
                        float(a_arr.mean() - b_arr.mean()), low, high, only_a, only_b, mcnemar_exact(only_a, only_b))


def sample_outcome(sample: Mapping[str, Any]) -> tuple[str, bool] | None:
    """(category, right?) of one logged lmms-eval sample of a yes/no task; None for other tasks' samples."""
    if POPE_KEY in sample:
        record = sample[POPE_KEY]
        return "all", record["prediction"] == record["ground_truth"]
    key = next((k for k in PAIR_METRIC_KEYS if k in sample), None)
    if key is None:
        return None
    record = sample[key]
    return str(record["category"]), float(record["score"]) == 1.0


def question_outcomes(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> Outcomes:
    """Per task (POPE splits as category "all", pair tasks per attribute/category): doc id -> answered right."""
    out: Outcomes = {}
    for task, task_samples in samples.items():
        for sample in task_samples:
            found = sample_outcome(sample)
            if found is not None:
                category, right = found
                out.setdefault(task, {}).setdefault(category, {})[int(sample["doc_id"])] = right
    return out


def read_run_samples(run_dir: Path) -> dict[str, list[dict]]:
    """The `samples_<task>.jsonl` files of an eval-lmm output directory (errors name the file and line)."""
    files = sorted(Path(run_dir).glob("samples_*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no samples_<task>.jsonl files (not an eval-lmm output directory?)")
    samples: dict[str, list[dict]] = {}
    for path in files:
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or "doc_id" not in row:
                raise ValueError(f"{path}:{number}: sample without a doc_id field")
            rows.append(row)
        samples[path.stem.removeprefix("samples_")] = rows
    return samples


def compare_outcomes(a: Outcomes, b: Outcomes, resamples: int = 2000, seed: int = 0) -> list[PairedResult]:
    """A vs B per task and category on the questions both answered (categories present in both)."""
    results = []
    for task in sorted(set(a) & set(b)):
        for category in sorted(set(a[task]) & set(b[task])):
            shared = sorted(set(a[task][category]) & set(b[task][category]))
            if not shared:
                continue
            results.append(paired_compare([a[task][category][d] for d in shared],
                                          [b[task][category][d] for d in shared], task, category, resamples, seed))
    return results


def compare_runs(run_a: Path, run_b: Path, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The `--compare` report of two eval-lmm output directories (JSON-ready)."""
    a, b = question_outcomes(read_run_samples(run_a)), question_outcomes(read_run_samples(run_b))
    rows = compare_outcomes(a, b, resamples, seed)
    if not rows:
        raise ValueError(f"{run_a} and {run_b} share no yes/no task and category with answered questions")
    return {"run_a": str(run_a), "run_b": str(run_b), "resamples": resamples, "seed": seed, "level": 0.95,
            "categories": [{**asdict(r), "significant": r.significant} for r in rows]}


def compare_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# eval-lmm paired comparison: A - B", "", f"- A: {report['run_a']}", f"- B: {report['run_b']}",
             (f"- 95% paired bootstrap interval ({report['resamples']} resamples, seed {report['seed']}); "
              "McNemar exact p on the discordant questions"), "",
             ("| task | category | n | acc A | acc B | A - B (pts) | 95% CI (pts) | only A right | only B right "
              "| McNemar p | significant |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["categories"]:
        lines.append(f"| {r['task']} | {r['category']} | {r['n']} | {r['accuracy_a']:.4f} | {r['accuracy_b']:.4f} "
                     f"| {100 * r['difference']:+.1f} | [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] "
                     f"| {r['only_a_right']} | {r['only_b_right']} | {r['p_mcnemar']:.4g} "
                     f"| {'yes' if r['significant'] else 'no'} |")
    return "\n".join(lines) + "\n"
