"""Turn a `simple_evaluate` result (with logged samples) and the plugin's P(yes) scores into eval-lmm's report.

* POPE families (`fgclip_pope_*`, or lmms-eval's `pope_random`/`pope_pop`/`pope_adv`): per-split metrics recomputed
  from the samples (they match lmms-eval's own aggregates, which are kept too), **mean F1 over the splits** (the
  LLaVA protocol, docs/llava.md, "Evaluation protocol") and pooled metrics over all splits' questions; the yes-rate
  is the model's.
* Yes/no pair tasks (`fgclip_attr_*`, lmms-eval's `mme`): accuracy, acc+ and MME score per attribute / category.
* Calibration: AUROC of P(yes) (renormalised over yes/no, from the first generated step) per task and pooled.
* Every other task: lmms-eval's aggregate metrics as they come.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from lmms_eval.tasks.mme.utils import parse_pred_ans

from fgclip_lmm.eval.lmm.metrics import auroc, binary_metrics, pair_metrics

POPE_FAMILIES = {"fgclip_pope": "fgclip_pope_", "pope": "pope_"}
PAIR_METRIC_KEYS = ("attr_accuracy", "mme_perception_score", "mme_cognition_score")


def _yes_no_label(doc: Mapping[str, Any]) -> int | None:
    answer = str(doc.get("answer", "")).strip().lower().rstrip(".")
    if answer in ("yes", "no"):
        return int(answer == "yes")
    gt = str(doc.get("gt_answer", "")).strip()
    return int(gt == "1") if gt in ("0", "1") else None


def _metrics_of(results: Mapping[str, Any], task: str) -> dict[str, Any]:
    raw = results.get("results", {}).get(task, {})
    return {k.split(",")[0]: v for k, v in raw.items() if "," in k and "_stderr" not in k}


def _clean(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _calibration(task_samples: list[dict], scores: Mapping[tuple[str, int], float], task: str) -> dict[str, Any]:
    probs, labels = [], []
    for sample in task_samples:
        label = _yes_no_label(sample.get("doc", {}))
        score = scores.get((task, int(sample["doc_id"])))
        if label is not None and score is not None:
            probs.append(score)
            labels.append(label)
    if not probs:
        return {}
    return {"n_scored": len(probs), "auroc_p_yes": _clean(auroc(probs, labels)),
            "mean_p_yes": sum(probs) / len(probs), "_probs": probs, "_labels": labels}


def _pope_task(samples: list[dict]) -> tuple[list[str], list[str]]:
    preds = [s["pope_accuracy"]["prediction"] for s in samples]
    truth = [s["pope_accuracy"]["ground_truth"] for s in samples]
    return preds, truth


def _pair_records(samples: list[dict]) -> list[dict[str, Any]]:
    records = []
    for sample in samples:
        key = next(k for k in PAIR_METRIC_KEYS if k in sample)
        record = dict(sample[key])
        record.setdefault("prediction", parse_pred_ans(str(sample["filtered_resps"][0])))
        records.append(record)
    return records


def build_report(results: Mapping[str, Any], scores: Mapping[tuple[str, int], float]) -> dict[str, Any]:
    """The eval-lmm report (JSON-ready): pope families, pair tasks, calibration and all lmms-eval metrics."""
    samples: Mapping[str, list[dict]] = results.get("samples", {})
    report: dict[str, Any] = {"pope": {}, "pairs": {}, "tasks": {}, "calibration": {}}
    pooled_cal: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for task in sorted(samples):
        task_samples = samples[task]
        report["tasks"][task] = _metrics_of(results, task)
        if not task_samples:
            continue
        cal = _calibration(task_samples, scores, task)
        if cal:
            family = "pope" if "pope_accuracy" in task_samples[0] else "pairs" if any(
                k in task_samples[0] for k in PAIR_METRIC_KEYS) else "other"
            pooled_cal[family][0].extend(cal.pop("_probs"))
            pooled_cal[family][1].extend(cal.pop("_labels"))
            report["calibration"][task] = cal
        if "pope_accuracy" in task_samples[0]:
            family = next((f for f, p in POPE_FAMILIES.items() if task.startswith(p)), task)
            preds, truth = _pope_task(task_samples)
            entry = binary_metrics(preds, truth).as_dict()
            entry["lmms_eval_f1"] = report["tasks"][task].get("pope_f1_score")
            entry["auroc_p_yes"] = cal.get("auroc_p_yes")
            report["pope"].setdefault(family, {"splits": {}, "_preds": [], "_truth": []})
            report["pope"][family]["splits"][task] = entry
            report["pope"][family]["_preds"] += preds
            report["pope"][family]["_truth"] += truth
        elif any(k in task_samples[0] for k in PAIR_METRIC_KEYS):
            records = _pair_records(task_samples)
            by_category: dict[str, list[dict]] = defaultdict(list)
            for record in records:
                by_category[record["category"]].append(record)
            for category, recs in sorted(by_category.items()):
                entry = {k: _clean(v) for k, v in pair_metrics(recs).as_dict().items()}
                entry["yes_rate"] = sum(r["prediction"] == "yes" for r in recs) / len(recs)
                if len(by_category) == 1:
                    entry["auroc_p_yes"] = cal.get("auroc_p_yes")
                report["pairs"].setdefault(task, {})[category] = entry
    for block in report["pope"].values():
        splits = block["splits"]
        block["mean_f1"] = sum(s["f1"] for s in splits.values()) / len(splits)
        block["pooled"] = binary_metrics(block.pop("_preds"), block.pop("_truth")).as_dict()
    for family, (probs, labels) in pooled_cal.items():
        report["calibration"][f"pooled_{family}"] = {"n_scored": len(probs),
                                                     "auroc_p_yes": _clean(auroc(probs, labels)),
                                                      "mean_p_yes": sum(probs) / len(probs)}
    return report


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(report: Mapping[str, Any], header: Mapping[str, Any]) -> str:
    """Markdown tables: POPE (per split, mean F1, pooled), pair tasks, calibration, other metrics."""
    lines = [f"# eval-lmm: {header.get('model')}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k not in ("model", "lmms_eval_command")] + [""]
    if header.get("lmms_eval_command"):
        lines += ["The same evaluation through lmms-eval's own CLI (our tasks need `--include_path`):", "", "```bash",
                  *header["lmms_eval_command"], "```", ""]
    for family, block in report["pope"].items():
        lines += [f"## POPE ({family}): F1 per split and their mean (LLaVA protocol)", "",
                  "| split | n | accuracy | precision | recall | F1 | model yes-rate | GT yes-rate | unparsed "
                  "| AUROC P(yes) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for task, m in block["splits"].items():
            lines.append(f"| {task} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['precision'])} | {_fmt(m['recall'])} "
                         f"| {_fmt(m['f1'])} | {_fmt(m['yes_rate'])} | {_fmt(m['gt_yes_rate'])} "
                         f"| {_fmt(m['unparsed_rate'])} | {_fmt(m['auroc_p_yes'])} |")
        p = block["pooled"]
        lines.append(f"| **mean F1 over splits** | | | | | **{_fmt(block['mean_f1'])}** | | | | |")
        lines.append(f"| pooled (all questions) | {p['n']} | {_fmt(p['accuracy'])} | {_fmt(p['precision'])} "
                     f"| {_fmt(p['recall'])} | {_fmt(p['f1'])} | {_fmt(p['yes_rate'])} | {_fmt(p['gt_yes_rate'])} "
                     f"| {_fmt(p['unparsed_rate'])} | |")
        lines.append("")
    if report["pairs"]:
        lines += ["## Yes/no pairs (MME style): per attribute / category", "",
                  "| task | attribute | questions | pairs | accuracy | acc+ | score (0-200) | model yes-rate "
                  "| AUROC P(yes) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for task, cats in report["pairs"].items():
            for cat, m in cats.items():
                lines.append(f"| {task} | {cat} | {m['n_questions']} | {m['n_pairs']} | {_fmt(m['accuracy'])} "
                             f"| {_fmt(m['acc_plus'])} | {_fmt(m['score'], 2)} | {_fmt(m['yes_rate'])} "
                             f"| {_fmt(m.get('auroc_p_yes'))} |")
        lines.append("")
    if report.get("controls"):
        from fgclip_lmm.eval.lmm.controls import controls_markdown

        lines += controls_markdown(report["controls"]["by_task"], report["controls"]["kinds"])
    if report["calibration"]:
        lines += ["## Calibration: AUROC of P(yes) (first-step logits, renormalised over yes/no)", "",
                  "| task | scored | AUROC | mean P(yes) |", "|---|---|---|---|"]
        for task, c in report["calibration"].items():
            lines.append(f"| {task} | {c['n_scored']} | {_fmt(c['auroc_p_yes'])} | {_fmt(c['mean_p_yes'])} |")
        lines.append("")
    lines += ["## lmms-eval metrics (as reported by lmms-eval)", "", "| task | metric | value |", "|---|---|---|"]
    for task, metrics in report["tasks"].items():
        for name, value in metrics.items():
            lines.append(f"| {task} | {name} | {_fmt(value)} |")
    lines.append("")
    lines.append("Note: lmms-eval's `pope_yes_ratio` is the ground-truth yes share; the yes-rates above are the "
                 "model's.")
    return "\n".join(lines) + "\n"
