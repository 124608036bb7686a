"""The demo report: `report.md`, `report.html`, PNG plots and `report.json` (every number with its source file).

Built from the run's artifacts only (metrics.jsonl of the trainers, eval-clip and eval-lmm JSON, stages.json).
"""
from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from ..constants import FGOVD_SPLITS
from ..data.synth.manifest import load_manifest
from . import plots
from .config import DemoConfig
from .numbers import Numbers, fmt
from .pipeline import BENCH_ENCODERS, ENCODERS, DemoPaths
from .report_lmm import lmm_sections
from .stages import StageRunner

SECTIONS = ("Run", "Encoder training", "FG-OVD-style accuracy by difficulty", "Box classification and retrieval",
            "LMM hallucination: POPE", "LMM attribute understanding", "Does the LMM look at the image? Blind controls",
            "LMM paired differences", "Box-phrase similarity heatmaps",
            "Where FG-CLIP did not help", "Provenance")


class Blocks:
    """Report content rendered to both markdown and HTML."""

    def __init__(self):
        self.items: list[tuple[str, object]] = []

    def h(self, text: str, level: int = 2):
        self.items.append(("h", (level, text)))

    def p(self, text: str):
        self.items.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]):
        self.items.append(("table", (header, rows)))

    def img(self, path: Path, alt: str):
        self.items.append(("img", (path.name, alt)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.items:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                header, rows = value
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(r) + " |" for r in rows]
            else:
                out.append(f"![{value[1]}]({value[0]})")
            out.append("")
        return "\n".join(out)

    def html(self) -> str:
        body = []
        for kind, value in self.items:
            if kind == "h":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                header, rows = value
                cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><tr>{cells}</tr>{trs}</table>")
            else:
                body.append(f'<img src="{value[0]}" alt="{html.escape(value[1])}">')
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
                 "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")
        return f"<!doctype html><meta charset=utf-8><title>fgclip-lmm demo</title><style>{style}</style>" + \
            "\n".join(body)


def last_index(numbers: Numbers, path: Path, key: str) -> int:
    rows = numbers.load(path)
    return max(i for i, r in enumerate(rows) if key in r)


def write_report(cfg: DemoConfig, paths: DemoPaths, runner: StageRunner, stage_names: list[str],
                 wall_seconds: float) -> Path:
    out, nums, b = paths.out, Numbers(paths.out), Blocks()
    base, fine = plots.FAMILY_NAMES[cfg.encoder]
    labels = plots.labels_for(cfg.encoder)
    b.h(f"fgclip-lmm demo: {fine} vs {base} on the synthetic fine-grained world", 1)
    deltas: list[tuple[str, float, float]] = []  # (metric, clip, fgclip)

    b.h("Run")
    stage_file = out / "stages.json"
    b.p(f"Config: {json.dumps(asdict(cfg))}. Both encoders share stage 1 ({cfg.stage1_steps} steps); {fine} then "
        f"trains stage 2 (regional + hard negatives) for {cfg.stage2_steps} steps while the {base} baseline continues "
        "stage 1 for the same steps on the same images and captions. Both LMMs use the same tiny LLM, data, steps "
        f"and seed. This report was written {wall_seconds:.0f} s after the command started (stages already complete "
        "were verified and skipped).")
    b.table(["stage", "seconds"], [[name, fmt(nums.get(stage_file, name, "seconds"))] for name in stage_names])

    b.h("Encoder training")
    keys = {"stage 1 (shared)": "stage1", f"{base} continued": "clip", f"{fine} stage 2": "fgclip"}
    runs = {label: paths.encoder[key] for label, key in keys.items()}
    series = {label: {t: nums.series(d / "metrics.jsonl", t) for t in
                      ("loss", "global_long", "global_short", "region", "hard_neg", "eval/hard_neg_acc")}
              for label, d in runs.items()}
    continued = {label: cfg.stage1_steps for label, key in keys.items() if key != "stage1"}  # they log from step 0
    b.img(plots.loss_curves(out / "loss_curves.png", series, offsets=continued, boundary=cfg.stage1_steps,
                            colours={label: plots.COLOURS[key] for label, key in keys.items()}),
          "loss terms and val hard-negative accuracy per global step")
    b.p(f"Loss terms and the validation hard-negative accuracy against the global step: both encoders share the first "
        f"{cfg.stage1_steps} steps (stage 1), after which {base} continues stage 1 and {fine} trains stage 2 (the "
        f"regional and hard-negative panels are {fine}'s only). One colour per run in every panel, as in the bars.")
    rows = []
    for label, d in runs.items():
        metrics = d / "metrics.jsonl"
        i = last_index(nums, metrics, "eval/hard_neg_acc")
        j = last_index(nums, metrics, "samples_per_s")
        rows.append([label, fmt(nums.get(metrics, i, "eval/hard_neg_acc", scale=100)),
                     fmt(nums.get(metrics, i, "eval/chance", scale=100)), fmt(nums.get(metrics, j, "samples_per_s")),
                     fmt(nums.get(metrics, j, "mfu", scale=100), 2)])
    b.table(["run", "val hard-neg acc %", "chance %", "samples/s", "MFU % (measured peak)"], rows)

    b.h("FG-OVD-style accuracy by difficulty")
    b.p("Top-1 % of a box's RoIAlign feature picking its phrase among 1 + 10 (hard = 1 attribute changed, medium 2, "
        "easy 3, trivial = other objects' phrases). `heldout` images hold colour-shape combinations never seen in "
        "training. `stage1` is the shared checkpoint both encoders start from (before stage 2).")
    for subset in ("test", "heldout"):
        key = f"fgovd_{subset}"
        vals = {n: [nums.get(paths.bench[n] / key / "fgovd.json", "results", d, "top1") for d in FGOVD_SPLITS]
                for n in BENCH_ENCODERS}
        b.table(["split", *FGOVD_SPLITS], [[f"{n} ({subset})", *map(fmt, v)] for n, v in vals.items()])
        deltas += [(f"FG-OVD {subset} {d}", c, f) for d, c,
                   f in zip(FGOVD_SPLITS, vals["clip"], vals["fgclip"], strict=True)]
        b.img(plots.grouped_bars(out / f"fgovd_{subset}.png", f"FG-OVD-style top-1 ({subset})", list(FGOVD_SPLITS),
                                 vals, "top-1 %", chance=100 / 11, labels=labels), f"FG-OVD {subset}")

    b.h("Box classification and retrieval")
    box = {n: [nums.get(paths.bench[n] / "boxcls" / "boxcls.json", "results", "all", k) for k in ("top1", "top5")]
           for n in BENCH_ENCODERS}
    groups, bars = ["box top1", "box top5"], {n: list(v) for n, v in box.items()}
    deltas += [(f"box classification {k}", box["clip"][i], box["fgclip"][i]) for i, k in enumerate(("top1", "top5"))]
    for kind in ("long", "short"):
        for direction, short in (("image_to_text", "I2T"), ("text_to_image", "T2I")):
            for k in ("R@1", "R@5"):
                label = f"{kind} {short} {k}"
                groups.append(label)
                for n in BENCH_ENCODERS:
                    bars[n].append(nums.get(paths.bench[n] / f"retrieval_{kind}" / "retrieval.json", "results",
                                            direction, k))
                deltas.append((f"retrieval {label}", bars["clip"][-1], bars["fgclip"][-1]))
    b.table(["encoder", *groups], [[n, *map(fmt, v)] for n, v in bars.items()])
    b.img(plots.grouped_bars(out / "boxcls_retrieval.png", "box classification and retrieval (%)", groups, bars, "%",
                             labels=labels),
          "box classification and retrieval")

    lmm_not_helped = lmm_sections(b, nums, paths, labels, (base, fine))

    b.h("Box-phrase similarity heatmaps")
    world = load_manifest(paths.world)
    b.img(plots.similarity_heatmaps(out / "heatmaps.png", {n: paths.encoder[n] / "hf" for n in ENCODERS},
                                    world.path("finehard", "test"), world.image_root, cfg.image_size,
                                    cfg.heatmap_images, labels, cfg.patch_budgets),
          "dense-feature similarity to a box phrase")
    b.p("Left: a test image with one object's box (white) and its phrase. Then, per encoder, the cosine similarity of "
        "each image patch's dense feature to that phrase's text feature; bright = similar, each map has its own "
        "colour bar, the dashed box marks the object. An encoder that localises the phrase is bright inside the box "
        "and dark elsewhere.")

    b.h("Where FG-CLIP did not help")
    worse = [(m, c, f) for m, c, f in deltas if f <= c]
    if worse:
        b.p(f"{fine} was not better than the {base} baseline on {len(worse)} of {len(deltas)} compared metrics:")
        b.table(["metric", base, fine, "delta"], [[m, fmt(c, 2), fmt(f, 2), fmt(f - c, 2)] for m, c, f in worse])
    else:
        b.p(f"{fine} was better than the {base} baseline on all {len(deltas)} compared encoder metrics in this run.")
    if lmm_not_helped:
        b.p(f"Inside the LMM (decided by the paired test, not by raw differences), {fine} did not win on: "
            + "; ".join(lmm_not_helped) + ".")

    b.h("Provenance")
    b.p("Every number above was read from this run's artifacts; report.json lists each with its file and key path "
        "(`fgclip_lmm.demo.numbers.verify_numbers` re-reads them).")
    (out / "report.json").write_text(json.dumps({"config": asdict(cfg), "numbers": nums.records,
                                                 "deltas": deltas}, indent=1))
    (out / "report.md").write_text(b.markdown())
    (out / "report.html").write_text(b.html())
    return out / "report.md"
