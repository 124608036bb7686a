"""The demo report's LMM half: POPE, attribute pairs, blind controls (does the LMM look?) and the paired
FG-CLIP - CLIP comparison (did the tower matter?).

Every LMM verdict here is decided against a control: a category is "uses the image" only when the accuracy with the
image beats the best blind control (gray image, another image) by >= 5 points (`eval/lmm/controls.py`), and a
tower difference is a win or a loss only when its 95% paired bootstrap interval excludes 0 (`eval/lmm/paired.py`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import ATTRIBUTES, POPE_SPLITS
from ..eval.lmm.controls import TEXT_PRIOR_GAIN
from . import plots
from .numbers import Numbers, fmt
from .pipeline import ENCODERS, DemoPaths

if TYPE_CHECKING:
    from .report import Blocks

# (task, category) of every yes/no category the demo evaluates, in report order, with its row label
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    *((f"fgclip_pope_{s}", "all", f"POPE {s}") for s in POPE_SPLITS),
    *((f"fgclip_attr_{a}", a, a) for a in ATTRIBUTES),
)


def pope_section(b: Blocks, nums: Numbers, paths: DemoPaths, labels: dict[str, str]) -> None:
    b.h("LMM hallucination: POPE")
    b.p("F1 per split and their mean (LLaVA's protocol), the model's own yes-rate (from its answers, not lmms-eval's "
        "ground-truth share), the share of answers that were neither yes nor no, and AUROC of P(yes).")
    rows, f1s, yes = [], {}, {}
    for n in ENCODERS:
        path = paths.lmm_eval[n] / "eval_lmm.json"
        base = ("report", "pope", "fgclip_pope")
        f1s[n] = [nums.get(path, *base, "splits", f"fgclip_pope_{s}", "f1", scale=100) for s in POPE_SPLITS]
        yes[n] = [nums.get(path, *base, "splits", f"fgclip_pope_{s}", "yes_rate", scale=100) for s in POPE_SPLITS]
        unparsed = [nums.get(path, *base, "splits", f"fgclip_pope_{s}", "unparsed_rate", scale=100)
                    for s in POPE_SPLITS]
        auroc = [nums.get(path, *base, "splits", f"fgclip_pope_{s}", "auroc_p_yes") for s in POPE_SPLITS]
        mean_f1 = nums.get(path, *base, "mean_f1", scale=100)
        rows.append([n, *map(fmt, f1s[n]), fmt(mean_f1), *map(fmt, yes[n]), *map(fmt, unparsed),
                     *(fmt(a, 3) for a in auroc)])
    header = ["LMM", *(f"F1 {s}" for s in POPE_SPLITS), "mean F1", *(f"yes% {s}" for s in POPE_SPLITS),
              *(f"unparsed% {s}" for s in POPE_SPLITS), *(f"AUROC {s}" for s in POPE_SPLITS)]
    b.table(header, rows)
    constant = [n for n in ENCODERS if all(y >= 95 or y <= 5 for y in yes[n])]
    if constant:
        b.p(f"{' and '.join(constant)}: the model gives the same answer to (almost) every POPE question (yes-rate "
            "near 0% or 100%), so its POPE F1 measures a constant answerer, not hallucination control.")
    b.img(plots.grouped_bars(paths.out / "pope.png", "POPE F1 and model yes-rate (%)",
                             [f"F1 {s}" for s in POPE_SPLITS] + [f"yes {s}" for s in POPE_SPLITS],
                             {n: f1s[n] + yes[n] for n in ENCODERS}, "%", labels=labels), "POPE")


def attribute_section(b: Blocks, nums: Numbers, paths: DemoPaths, labels: dict[str, str]) -> None:
    b.h("LMM attribute understanding")
    b.p("MME-style yes/no pairs per attribute: accuracy, acc+ (both questions of a pair right) and AUROC of P(yes). "
        "Whether an accuracy comes from the image or from the question's wording is the next section's business.")
    acc, rows = {}, []
    for n in ENCODERS:
        path = paths.lmm_eval[n] / "eval_lmm.json"
        acc[n] = [nums.get(path, "report", "pairs", f"fgclip_attr_{a}", a, "accuracy", scale=100) for a in ATTRIBUTES]
        plus = [nums.get(path, "report", "pairs", f"fgclip_attr_{a}", a, "acc_plus", scale=100) for a in ATTRIBUTES]
        auroc = [nums.get(path, "report", "pairs", f"fgclip_attr_{a}", a, "auroc_p_yes") for a in ATTRIBUTES]
        rows.append([n, *map(fmt, acc[n]), *map(fmt, plus), *(fmt(x, 3) for x in auroc)])
    b.table(["LMM", *(f"acc {a}" for a in ATTRIBUTES), *(f"acc+ {a}" for a in ATTRIBUTES),
             *(f"AUROC {a}" for a in ATTRIBUTES)], rows)
    b.img(plots.grouped_bars(paths.out / "attributes.png", "accuracy per attribute (%)", list(ATTRIBUTES), acc, "%",
                             chance=50, labels=labels), "attribute accuracy")


def controls_section(b: Blocks, nums: Numbers, paths: DemoPaths, labels: dict[str, str]) -> dict[str, list[float]]:
    """Accuracy with the image vs the gray / shuffled controls per tower; returns the visual gains (points)."""
    b.h("Does the LMM look at the image? Blind controls")
    b.p("Every yes/no question is asked again with a constant gray image and with another image of the same split "
        "(eval-lmm `--controls gray,shuffled`). Visual gain = accuracy with the image minus the best control; below "
        f"{100 * TEXT_PRIOR_GAIN:.0f} points a category is answered from text priors, whatever its accuracy.")
    gains: dict[str, list[float]] = {}
    rows = []
    for n in ENCODERS:
        path = paths.lmm_eval[n] / "eval_lmm.json"
        gains[n] = []
        for task, category, label in CATEGORIES:
            keys = ("report", "controls", "by_task", task, category)
            image = nums.get(path, *keys, "accuracy_image", scale=100)
            gray = nums.get(path, *keys, "accuracy_gray", scale=100)
            shuffled = nums.get(path, *keys, "accuracy_shuffled", scale=100)
            gain = nums.get(path, *keys, "visual_gain", scale=100)
            gains[n].append(gain)
            verdict = "uses the image" if gain >= 100 * TEXT_PRIOR_GAIN else "text priors"
            rows.append([labels.get(n, n), label, fmt(image), fmt(gray), fmt(shuffled), fmt(gain), verdict])
    b.table(["LMM", "category", "with image %", "gray %", "shuffled %", "visual gain (pts)", "verdict"], rows)
    names = [label for _, _, label in CATEGORIES]
    b.img(plots.grouped_bars(paths.out / "visual_gain.png", "visual gain: accuracy with image - best blind control "
                             "(points)", names, gains, "points", chance=100 * TEXT_PRIOR_GAIN, labels=labels),
          "visual gain per category")
    b.p(f"The dashed line is the {100 * TEXT_PRIOR_GAIN:.0f}-point threshold; a bar below it means that LMM answers "
        "that category the same with or without the picture.")
    return gains


def paired_section(b: Blocks, nums: Numbers, paths: DemoPaths, gains: dict[str, list[float]],
                   names: tuple[str, str]) -> list[str]:
    """FG-CLIP - CLIP on the same questions (bootstrap interval + McNemar); returns lines for 'did not help'."""
    base, fine = names
    b.h(f"LMM paired differences: {fine} - {base}")
    b.p(f"Both LMMs answer the same questions, so each category is compared question by question: the difference "
        f"in accuracy ({fine} minus {base}) with a 95% paired bootstrap interval and McNemar's exact p-value on the "
        "questions only one of them got right. A difference is a win or a loss only when its interval excludes 0. "
        "The interval covers question sampling, not training noise: there is one LMM per tower (one seed), and "
        "LMMs trained from the same recipe on towers from another run can differ by several points in a category, so "
        "a win or a loss here needs a second seed before it is cited.")
    path = paths.lmm_compare / "compare.json"
    index = {(r["task"], r["category"]): i for i, r in enumerate(nums.load(path)["categories"])}
    rows, wins, losses, ties = [], [], [], []
    for k, (task, category, label) in enumerate(CATEGORIES):
        i = index[(task, category)]
        diff = nums.get(path, "categories", i, "difference", scale=100)
        low = nums.get(path, "categories", i, "ci_low", scale=100)
        high = nums.get(path, "categories", i, "ci_high", scale=100)
        p = nums.get(path, "categories", i, "p_mcnemar")
        n = nums.get(path, "categories", i, "n")
        blind = [g[k] < 100 * TEXT_PRIOR_GAIN for g in gains.values()]
        if low > 0:
            verdict, bucket = "win", wins
        elif high < 0:
            verdict, bucket = "loss", losses
        else:
            verdict, bucket = "no detectable difference", ties
        if all(blind):
            verdict += " (neither LMM uses the image here)"
        bucket.append(label)
        rows.append([label, f"{n:.0f}", fmt(diff), f"[{fmt(low)}, {fmt(high)}]", fmt(p, 4), verdict])
    b.table(["category", "questions", f"{fine} - {base} (pts)", "95% CI (pts)", "McNemar p", "verdict"], rows)
    summary = (f"Wins for {fine}: {', '.join(wins) or 'none'}. Losses: {', '.join(losses) or 'none'}. "
               f"No detectable difference: {', '.join(ties) or 'none'}.")
    both_blind = [label for k, (_, _, label) in enumerate(CATEGORIES)
                  if all(g[k] < 100 * TEXT_PRIOR_GAIN for g in gains.values())]
    if both_blind:
        summary += (f" In {', '.join(both_blind)} neither LMM beats its blind controls, so no tower could matter "
                    "there: the encoder-level gains above cannot reach an LMM that does not look.")
    b.p(summary)
    return [f"LMM {label}: {'loss' if label in losses else 'no detectable difference'} (paired test)"
            for label in losses + ties]


def lmm_sections(b: Blocks, nums: Numbers, paths: DemoPaths, labels: dict[str, str],
                 names: tuple[str, str]) -> list[str]:
    pope_section(b, nums, paths, labels)
    attribute_section(b, nums, paths, labels)
    gains = controls_section(b, nums, paths, labels)
    return paired_section(b, nums, paths, gains, names)
