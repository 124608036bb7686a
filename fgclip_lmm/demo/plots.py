"""PNG figures of the demo report (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

COLOURS = {"stage1": "#c7c7c7", "clip": "#7f7f7f", "fgclip": "#d62728"}
LABELS = {"stage1": "shared stage 1 (before stage 2)", "clip": "CLIP (stage 1 only)", "fgclip": "FG-CLIP (stage 1 + 2)"}
# (baseline, fine-grained) display names of each encoder family the demo compares
FAMILY_NAMES = {"fgclip": ("CLIP", "FG-CLIP"), "fgclip2": ("SigLIP 2", "FG-CLIP 2")}


def labels_for(encoder: str) -> dict[str, str]:
    base, fine = FAMILY_NAMES[encoder]
    return {**LABELS, "clip": f"{base} (stage 1 only)", "fgclip": f"{fine} (stage 1 + 2)"}


def grouped_bars(path: Path, title: str, groups: list[str], values: dict[str, list[float]], ylabel: str,
                 chance: float | None = None, labels: dict[str, str] = LABELS) -> Path:
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) + 2), 3.4))
    x = np.arange(len(groups))
    width = 0.8 / len(values)
    for i, (name, vals) in enumerate(values.items()):
        bars = ax.bar(x + (i - (len(values) - 1) / 2) * width, vals, width, label=labels.get(name, name),
                      color=COLOURS.get(name))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    if chance is not None:
        ax.axhline(chance, color="black", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(path: Path, runs: dict[str, dict[str, tuple[list[int], list[float]]]]) -> Path:
    """One panel per loss term; one line per run (steps continue across stage 1 -> stage 2)."""
    terms = sorted({t for series in runs.values() for t in series})
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 3.0), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for run, series in runs.items():
            if term in series and series[term][0]:
                ax.plot(*series[term], label=run, lw=1.2, marker="o" if len(series[term][0]) < 4 else None, ms=3)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    box's phrase, as a map over its patch grid (`budgets`: FG-CLIP 2's NaFlex patch budgets)."""
    from transformers import AutoTokenizer

    from ..data.finehard import FineHardConfig, FineHardDataset
    from ..data.images import load_rgb
    from ..eval.clip.encode import model_class

    dataset = FineHardDataset(FineHardConfig(data_path=str(finehard), image_root=str(image_root),
                                             image_size=image_size, on_bad_record="skip"))
    models = {name: (model_class(str(p)).from_pretrained(p).eval(), AutoTokenizer.from_pretrained(p))
              for name, p in encoders.items()}
    fig, axes = plt.subplots(n_images, 1 + len(models), figsize=(2.6 * (1 + len(models)), 2.6 * n_images),
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
        axes[row][0].set_title(phrase, fontsize=7)
        for col, (name, (model, tokenizer)) in enumerate(models.items(), start=1):
            heat = _box_map(model, tokenizer, pixels, original, phrase, budgets)
            axes[row][col].imshow(heat.numpy(), cmap="inferno")
            axes[row][col].set_title(labels.get(name, name), fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
