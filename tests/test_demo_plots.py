"""Demo figures: loss curves in global steps with one colour per run in every panel, readable sizes."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from fgclip_lmm.demo import plots


def _runs() -> dict:
    stage1 = {"loss": ([5, 10], [9.0, 7.0]), "global_long": ([5, 10], [4.0, 3.0]), "eval/hard_neg_acc": ([10], [0.1])}
    clip = {"loss": ([5, 10], [6.5, 6.0]), "global_long": ([5, 10], [3.0, 2.8]), "region": ([], [])}
    fgclip = {"loss": ([5, 10], [8.0, 5.0]), "region": ([5, 10], [2.0, 1.5]), "eval/hard_neg_acc": ([10], [0.4])}
    return {"stage 1 (shared)": stage1, "CLIP continued": clip, "FG-CLIP stage 2": fgclip}


def test_curves_use_global_steps_and_one_colour_per_run() -> None:
    lines = plots.curve_lines(_runs(), offsets={"CLIP continued": 10, "FG-CLIP stage 2": 10})
    colours: dict[str, set[str]] = {}
    for line in lines:
        colours.setdefault(line.run, set()).add(line.colour)
    assert all(len(c) == 1 for c in colours.values()) and len({c.pop() for c in colours.values()}) == 3
    by_key = {(line.term, line.run): line for line in lines}
    assert by_key[("loss", "stage 1 (shared)")].steps == [5, 10]
    assert by_key[("loss", "FG-CLIP stage 2")].steps == [15, 20]
    assert by_key[("region", "FG-CLIP stage 2")].colour == plots.COLOURS["fgclip"]
    assert ("region", "CLIP continued") not in by_key  # an empty series draws nothing
    assert [line.term for line in lines][:3] == ["loss"] * 3  # known terms first, in TERM_TITLES order


def test_figures_fit_the_report_column(tmp_path: Path) -> None:
    column_px = plots.DPI * plots.MAX_WIDTH_IN * 1.05  # bbox_inches="tight" may add a few pixels
    curves = plots.loss_curves(tmp_path / "curves.png", _runs(), offsets={"FG-CLIP stage 2": 10}, boundary=10)
    groups = [f"g{i}" for i in range(10)]
    bars = plots.grouped_bars(tmp_path / "bars.png", "t", groups, {k: [50.0] * 10 for k in plots.COLOURS}, "%")
    for png in (curves, bars):
        width, height = Image.open(png).size
        assert width <= column_px and height > 300, (png.name, width, height)
