"""Stage-2 FG-CLIP training-step time against boxes per image (1..16) and hard negatives per box (0..20).

Two sweeps on one model: boxes per image at a fixed negative count, then negatives per box at a fixed box count
(`config.hard_negatives_per_box` is set to the count of each point, as the model's reshape requires). The points of
a sweep are timed round-robin (all points once, then again, ...), so machine drift spreads over the sweep; each
point's median is used. A straight line is fitted (numpy polyfit, degree 1) to median step time against the swept
count (and, as a check, to the fastest repeat of each point), and the script reports the slope, the intercept, R²
and the verdict: growth is called linear when R² >= --r2 (default 0.95) and a degree-2 fit shows no super-linear
term larger than --curvature (default 25%) of the linear prediction at the largest point (a quadratic cost such as
y = x² on these points gives ~100%; a concave, noisy curve is not penalised).

    python benchmarks/bench_scaling.py                         # tiny, CPU, ~1 min
    python benchmarks/bench_scaling.py --size b16 --device cuda --batch 16
"""
from __future__ import annotations

import common
import numpy as np
import presets
import torch
from bench_encoder_train import autocast, build

BOXES = (1, 2, 4, 8, 12, 16)
NEGATIVES = (0, 2, 5, 10, 15, 20)


def make_point(model, optimizer, device, dtype, batch_size, boxes, negatives):
    model.config.hard_negatives_per_box = negatives
    batch = presets.fgclip_batch(model.config, batch_size, stage=2, boxes_per_image=boxes, negatives=negatives,
                                 device=device)

    def step():
        model.config.hard_negatives_per_box = negatives
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
    rows = presets.short_path_rows(batch, model.config.text_config.pad_token_id)[0]
    return step, rows


def fit(xs, ys, r2_min: float, curvature_max: float) -> dict:
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    quad = np.polyfit(x, y, 2)
    x_max = float(x.max())
    curvature = quad[0] * x_max**2 / max(abs(slope * x_max + intercept), 1e-12)  # > 0: super-linear
    linear = bool(r2 >= r2_min and curvature < curvature_max)
    return {"slope_s_per_unit": float(slope), "intercept_s": float(intercept), "r2": r2,
            "quadratic_share_at_max": float(curvature), "linear": linear}


def sweep(model, optimizer, device, dtype, batch_size, name, values, fixed, repeats, warmup, r2_min, curvature_max):
    fns, rows = {}, {}
    for v in values:
        boxes, negs = (v, fixed) if name == "boxes_per_image" else (fixed, v)
        fns[v], rows[v] = make_point(model, optimizer, device, dtype, batch_size, boxes, negs)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    common.sync(device)
    times = {v: [] for v in values}
    for _ in range(repeats):
        for v in values:
            times[v].append(common.time_call(fns[v], device))
    medians = [common.median(times[v]) for v in values]
    fastest = [min(times[v]) for v in values]
    table = [{name: v, "text_rows": rows[v], "step_s": m, "fastest_s": f, "s_per_100_rows": 100 * m / rows[v]}
             for v, m, f in zip(values, medians, fastest, strict=True)]
    rows_per_unit = (rows[values[-1]] - rows[values[0]]) / (values[-1] - values[0])
    return {"points": table, "times_s": {str(v): t for v, t in times.items()}, "text_rows_per_unit": rows_per_unit,
            "fit": fit(values, medians, r2_min, curvature_max),
            "fit_fastest": fit(values, fastest, r2_min, curvature_max)}


def verdict(name: str, result: dict, unit: str) -> str:
    f, g = result["fit"], result["fit_fastest"]
    word = "LINEAR" if f["linear"] else "NOT linear"
    per_row = f["slope_s_per_unit"] * 1e3 / result["text_rows_per_unit"]
    return (f"{name}: growth is {word} (median times): slope {f['slope_s_per_unit'] * 1e3:.4g} ms per {unit} "
            f"(= {per_row:.3g} ms per short-path text row), "
            f"intercept {f['intercept_s'] * 1e3:.4g} ms, R^2 {f['r2']:.4f}, quadratic term of a degree-2 fit "
            f"{100 * f['quadratic_share_at_max']:+.1f}% at the largest point. Check on the fastest repeat of each "
            f"point (other processes only add time): {'linear' if g['linear'] else 'not linear'}, slope "
            f"{g['slope_s_per_unit'] * 1e3:.4g} ms, R^2 {g['r2']:.4f}, quadratic "
            f"{100 * g['quadratic_share_at_max']:+.1f}%")


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser("bench_scaling", __doc__, presets.SIZES)
    p.add_argument("--batch", type=int, default=None, help="images per step (default 2 on CPU, 16 on GPU)")
    p.add_argument("--fixed-negatives", type=int, default=10, help="negatives per box in the boxes sweep")
    p.add_argument("--fixed-boxes", type=int, default=4, help="boxes per image in the negatives sweep")
    p.add_argument("--boxes", type=int, nargs="+", default=list(BOXES))
    p.add_argument("--negatives", type=int, nargs="+", default=list(NEGATIVES))
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None)
    p.add_argument("--r2", type=float, default=0.95, help="R² threshold for calling growth linear")
    p.add_argument("--curvature", type=float, default=0.25, help="max super-linear share at the largest point")
    args = p.parse_args(argv)
    device = common.setup(args)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    args.batch = args.batch or (16 if device.type == "cuda" else 2)
    args.repeats = args.repeats or 7
    model = build(args.size, args.fixed_negatives, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    results = {}
    for name, values, fixed in (("boxes_per_image", args.boxes, args.fixed_negatives),
                                ("negatives_per_box", args.negatives, args.fixed_boxes)):
        results[name] = sweep(model, optimizer, device, args.dtype, args.batch, name, values, fixed, args.repeats,
                              args.warmup, args.r2, args.curvature)
    text = "\n\n".join([
        common.table(results["boxes_per_image"]["points"],
                     title=f"Stage-2 step time vs boxes per image ({args.fixed_negatives} negatives/box, "
                           f"batch {args.batch}, {args.size})"),
        verdict("boxes per image", results["boxes_per_image"], "box per image"),
        common.table(results["negatives_per_box"]["points"],
                     title=f"Stage-2 step time vs negatives per box ({args.fixed_boxes} boxes/image, "
                           f"batch {args.batch}, {args.size})"),
        verdict("negatives per box", results["negatives_per_box"], "negative per box"),
    ])
    common.finish("bench_scaling", args, device, results, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
