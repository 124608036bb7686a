"""The demo report's LMM verdicts: 'uses the image' from the controls, win / loss / no difference from the paired
interval, and the label for categories where neither LMM looks (on hand-written eval-lmm outputs)."""
import json
from pathlib import Path

from fgclip_lmm.demo.numbers import Numbers, verify_numbers
from fgclip_lmm.demo.pipeline import DemoPaths
from fgclip_lmm.demo.report import Blocks
from fgclip_lmm.demo.report_lmm import CATEGORIES, controls_section, paired_section


def write_run(out: Path, gains: dict[str, dict[str, float]], diffs: dict[str, tuple[float, float, float]]) -> DemoPaths:
    paths = DemoPaths(out)
    for tower, by_label in gains.items():
        by_task: dict = {}
        for task, category, label in CATEGORIES:
            gain = by_label.get(label, 0.0)
            by_task.setdefault(task, {})[category] = {
                "n": 200, "accuracy_image": 0.5 + gain, "accuracy_gray": 0.5, "accuracy_shuffled": 0.48,
                "visual_gain": gain, "label": "x"}
        path = paths.lmm_eval[tower] / "eval_lmm.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"report": {"controls": {"kinds": ["gray", "shuffled"], "by_task": by_task}}}))
    rows = []
    for task, category, label in CATEGORIES:
        d, low, high = diffs.get(label, (0.0, -0.05, 0.05))
        rows.append({"task": task, "category": category, "n": 200, "difference": d, "ci_low": low, "ci_high": high,
                     "p_mcnemar": 0.5})
    paths.lmm_compare.mkdir(parents=True)
    (paths.lmm_compare / "compare.json").write_text(json.dumps({"categories": rows[::-1]}))  # order-independent
    return paths


def test_verdicts_follow_the_controls_and_the_intervals(tmp_path: Path):
    gains = {"fgclip": {"existence": 0.30, "count": 0.20, "shape": 0.01},
             "clip": {"existence": 0.25, "count": 0.02, "shape": -0.02}}
    diffs = {"existence": (0.08, 0.01, 0.15), "count": (-0.09, -0.16, -0.02), "shape": (0.09, 0.01, 0.17)}
    paths = write_run(tmp_path, gains, diffs)
    b, nums = Blocks(), Numbers(tmp_path)
    found = controls_section(b, nums, paths, {})
    assert found["fgclip"][[c[2] for c in CATEGORIES].index("existence")] == 30.0
    not_helped = paired_section(b, nums, paths, found, ("CLIP", "FG-CLIP"))
    text = b.markdown()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| win |" in rows["existence"]
    assert "| loss |" in rows["count"]  # the CLIP LMM does not look at count, FG-CLIP's does: a paired loss anyway
    # a significant difference where neither LMM beats its controls is labelled as such
    assert "win (neither LMM uses the image here)" in rows["shape"]
    assert "no detectable difference (neither LMM uses the image here)" in rows["size"]
    assert "Wins for FG-CLIP: shape, existence." in text and "Losses: count." in text
    assert "LMM count: loss (paired test)" in not_helped and not any("existence" in s for s in not_helped)
    # every number in the tables was read from the files
    (tmp_path / "report.json").write_text(json.dumps({"numbers": nums.records}))
    assert verify_numbers(tmp_path / "report.json") == []
    verdicts = [line for line in text.splitlines() if line.endswith(("| uses the image |", "| text priors |"))]
    assert sum(v.endswith("| uses the image |") for v in verdicts) == 3 and len(verdicts) == 2 * len(CATEGORIES)
