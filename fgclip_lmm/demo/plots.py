"""PNG figures of the demo report (matplotlib, no display needed).

Figures are at most `MAX_WIDTH_IN` inches wide at `DPI`, i.e. no wider than the HTML report's 1100 px column, so
they are shown at their own size and their 9-10 pt text stays readable. Every run or encoder has one colour in
every figure (`COLOURS`, by key or label).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

DPI = 110
MAX_WIDTH_IN = 10.0  # 1100 px at DPI, the report's column width
COLOURS = {"stage1": "#7f7f7f", "clip": "#1f77b4", "fgclip": "#d62728"}
LABELS = {"stage1": "shared stage 1 (before stage 2)", "clip": "CLIP (stage 1 only)", "fgclip": "FG-CLIP (stage 1 + 2)"}
FALLBACK = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
# What each logged term is (loss panel titles).
TERM_TITLES = {"loss": "total loss", "global_long": "global loss, long captions (248 tokens)",
               "global_short": "global loss, short captions (77 tokens)", "region": "regional loss (RoIAlign boxes)",
               "hard_neg": "hard-negative loss (1 + 10 phrases per box)",
               "eval/hard_neg_acc": "val: box picks its phrase among 1 + 10"}


# (baseline, fine-grained) display names of each encoder family the demo compares
FAMILY_NAMES = {"fgclip": ("CLIP", "FG-CLIP"), "fgclip2": ("SigLIP 2", "FG-CLIP 2")}


def labels_for(encoder: str) -> dict[str, str]:
    base, fine = FAMILY_NAMES[encoder]
    return {**LABELS, "clip": f"{base} (stage 1 only)", "fgclip": f"{fine} (stage 1 + 2)"}


def colour_of(name: str, index: int) -> str:
    """The run's colour: by key (`clip`) or label ("CLIP continued"), else a fixed fallback by position."""
    if name in COLOURS:
        return COLOURS[name]
    lowered = name.lower()
    for key in ("fgclip", "fg-clip", "clip", "stage 1", "stage1"):
        if key in lowered:
            return COLOURS[{"fg-clip": "fgclip", "stage 1": "stage1"}.get(key, key)]
    return FALLBACK[index % len(FALLBACK)]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def grouped_bars(path: Path, title: str, groups: list[str], values: dict[str, list[float]], ylabel: str,
                 chance: float | None = None, labels: dict[str, str] = LABELS) -> Path:
    legend_in = 2.4  # the legend sits right of the axes
    width_in = min(MAX_WIDTH_IN - legend_in, max(4.5, 0.45 * len(groups) * len(values) + 1.0))
    fig, ax = plt.subplots(figsize=(width_in, 3.8))
    x = np.arange(len(groups))
    width = 0.8 / len(values)
    for i, (name, vals) in enumerate(values.items()):
        bars = ax.bar(x + (i - (len(values) - 1) / 2) * width, vals, width, label=labels.get(name, name),
                      color=colour_of(name, i))
        ax.bar_label(bars, fmt="%.0f" if len(groups) * len(values) > 18 else "%.1f", fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="black", lw=0.8, ls="--", label=f"chance ({chance:.1f})")
    ax.set_xticks(x, groups, fontsize=9, rotation=30 if len(groups) > 6 else 0,
                  ha="right" if len(groups) > 6 else "center")
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_title(title, fontsize=11)
    ax.margins(y=0.12)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


@dataclass(frozen=True)
class CurveLine:
    """One run's series of one term, in global steps, with the run's colour."""

    term: str
    run: str
    steps: list[int]
    values: list[float]
    colour: str


def curve_lines(runs: dict[str, dict[str, tuple[list[int], list[float]]]], offsets: dict[str, int] | None = None,
                colours: dict[str, str] | None = None) -> list[CurveLine]:
    """The lines of `loss_curves`, by term (known terms first, in `TERM_TITLES` order) then run.

    A run continued from another run's checkpoint logs from step 0: `offsets[run]` (the steps before it) turns its
    steps into global steps. Each run keeps one colour in every term (`colours[run]`, else `colour_of`).
    """
    offsets = offsets or {}
    colours = {run: (colours or {}).get(run) or colour_of(run, i) for i, run in enumerate(runs)}
    present = {t for series in runs.values() for t, (steps, _) in series.items() if steps}
    terms = [t for t in TERM_TITLES if t in present] + sorted(present - set(TERM_TITLES))
    return [CurveLine(term, run, [s + offsets.get(run, 0) for s in series[term][0]], list(series[term][1]),
                      colours[run])
            for term in terms for run, series in runs.items() if series.get(term, ([], []))[0]]


def loss_curves(path: Path, runs: dict[str, dict[str, tuple[list[int], list[float]]]],
                offsets: dict[str, int] | None = None, boundary: int | None = None,
                colours: dict[str, str] | None = None) -> Path:
    """One panel per logged term on a 3-column grid; one line per run (`curve_lines`), the same colour in every
    panel, against the global step; `boundary` draws the stage change as a dotted line."""
    lines = curve_lines(runs, offsets, colours)
    terms = list(dict.fromkeys(line.term for line in lines))
    cols = min(3, max(1, len(terms)))
    rows = max(1, math.ceil(len(terms) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(MAX_WIDTH_IN, 2.9 * rows + 0.5), squeeze=False)
    panels = dict(zip(terms, axes.flat, strict=False))
    for line in lines:
        panels[line.term].plot(line.steps, line.values, color=line.colour, lw=1.4,
                               marker="o" if len(line.steps) < 8 else None, ms=3.5, label=line.run)
    for term, ax in panels.items():
        if boundary is not None:
            ax.axvline(boundary, color="black", lw=0.7, ls=":")
        if term == "eval/hard_neg_acc":
            ax.axhline(1 / 11, color="black", lw=0.8, ls="--")
            ax.text(ax.get_xlim()[0], 1 / 11, " chance 1/11", fontsize=8, va="bottom")
            ax.set_ylabel("accuracy", fontsize=9)
        ax.set_title(TERM_TITLES.get(term, term), fontsize=10)
        ax.set_xlabel("global step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    colours = {line.run: line.colour for line in lines}
    handles = [plt.Line2D([], [], color=colour, lw=2, label=run) for run, colour in colours.items()]
    if boundary is not None:
        handles.append(plt.Line2D([], [], color="black", lw=0.7, ls=":", label=f"stage 2 starts (step {boundary})"))
    fig.legend(handles=handles, loc="upper center", ncol=max(1, len(handles)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return _save(fig, path)


def _box_map(model, tokenizer, pixels: torch.Tensor, image, phrase: str, budgets) -> torch.Tensor:
    """(h, w) cosine map between an image's dense features and a phrase: v1 on its square grid and short path;
    FG-CLIP 2 on its NaFlex grid and box walk (masked, padded to 64), as the benchmarks encode them."""
    from ..model import FGCLIP2Model

    if isinstance(model, FGCLIP2Model):
        from ..model.naflex import budget_for, make_image_processor

        patch = model.config.vision_config.patch_size
        processor = make_image_processor(patch, max(budgets))
        inputs = dict(processor(images=[image], max_num_patches=budget_for(*image.size, patch, budgets),
                                return_tensors="pt"))
        h, w = inputs["spatial_shapes"][0].tolist()
        dense = model.get_image_dense_features(**inputs)[0, : h * w]
        enc = tokenizer([phrase], padding="max_length", max_length=model.config.short_max_len, truncation=True,
                        return_tensors="pt")
        text = model.get_text_features(enc["input_ids"], attention_mask=enc["attention_mask"], walk_type="box")[0]
    else:
        dense = model.get_image_dense_features(pixels)[0]
        h = w = int(dense.shape[0] ** 0.5)
        ids = tokenizer([phrase], return_tensors="pt", truncation=True, max_length=model.config.short_max_len)
        text = model.get_text_features(ids.input_ids)[0]
    normalize = torch.nn.functional.normalize
    return (normalize(dense, dim=-1) @ normalize(text, dim=-1)).reshape(h, w)


@torch.no_grad()
def similarity_heatmaps(path: Path, encoders: dict[str, Path], finehard: Path, image_root: Path, image_size: int,
                        n_images: int, labels: dict[str, str] = LABELS, budgets=(16, 64)) -> Path:
    """For a few test images: the image with one box, then each encoder's dense-feature similarity to that
    box's phrase, as a map over its patch grid (`budgets`: FG-CLIP 2's NaFlex patch budgets) with its own colour
    bar (cosine similarity)."""
    from transformers import AutoTokenizer

    from ..data.finehard import FineHardConfig, FineHardDataset
    from ..data.images import load_rgb
    from ..eval.clip.encode import model_class

    dataset = FineHardDataset(FineHardConfig(data_path=str(finehard), image_root=str(image_root),
                                             image_size=image_size, on_bad_record="skip"))
    models = {name: (model_class(str(p)).from_pretrained(p).eval(), AutoTokenizer.from_pretrained(p))
              for name, p in encoders.items()}
    cols = 1 + len(models)
    side_in = min(2.8, (MAX_WIDTH_IN - 0.9 * len(models)) / cols)  # + a colour bar per map
    fig, axes = plt.subplots(n_images, cols, figsize=(side_in * cols + 0.6 * len(models), side_in * n_images + 0.9),
                             squeeze=False)
    for row in range(n_images):
        record = dataset.records[row]
        pixels = dataset[row]["pixel_values"].unsqueeze(0)
        phrase, box = record.short_exprs[0], record.boxes[0]
        original = load_rgb(record.image_path)
        image = original.resize((image_size, image_size))
        axes[row][0].imshow(image)
        x1, y1, x2, y2 = (box * image_size).tolist()
        axes[row][0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="white", lw=1.5))
        axes[row][0].set_title(f'box phrase: "{phrase}"', fontsize=9)
        for col, (name, (model, tokenizer)) in enumerate(models.items(), start=1):
            grid = _box_map(model, tokenizer, pixels, original, phrase, budgets).numpy()
            shown = axes[row][col].imshow(grid, cmap="inferno", extent=(0, image_size, image_size, 0))
            axes[row][col].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="cyan", lw=1.0,
                                                   ls="--"))
            axes[row][col].set_title(labels.get(name, name), fontsize=9)
            bar = fig.colorbar(shown, ax=axes[row][col], fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=7)
            bar.set_label("cosine similarity", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.text(0.5, 0.005, "Each map: cosine similarity of every image patch's dense feature to the box phrase's text "
             "feature (bright = similar; each map has its own scale). Dashed cyan: the phrase's box.",
             ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)
