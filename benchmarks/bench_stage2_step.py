"""Stage-2 FG-CLIP training step: length-bucketed text + fused QuickGELU against the step before them.

One step = `FGCLIPModel(**batch)` forward, `loss.backward()`, `AdamW.step()` on a synthetic stage-2 batch in the
collated format with text lengths as in the synthetic world (`presets.fgclip_batch(lengths="world")`: long
captions 25-133 tokens, short captions 5-21, box phrases short_expr 5-8 / long_expr 14-20, 10 negatives of 5-8
per box; each group eos-padded to its longest row). The same model instance is switched between four variants,
timed interleaved in one run:

* `unbucketed_unfused`: every short-path row at the widest group's width and the long captions at theirs
  (`bucket_texts = False`), transformers' `QuickGELUActivation`: the step before issue 16;
* `bucketed`: length buckets only; `fused`: fused QuickGELU only; `bucketed_fused`: both (the default now).

Each variant's loss on the same weights is recorded (their differences are float rounding, see
tests/test_model_text_buckets.py); the table gives median step times and speedups over `unbucketed_unfused`.

    python benchmarks/bench_stage2_step.py                          # sizes tiny and w256, CPU, ~3 min
    python benchmarks/bench_stage2_step.py --sizes b16 --device cuda --batch 64
"""
from __future__ import annotations

import common
import presets
import torch
from transformers.activations import QuickGELUActivation

from fgclip_lmm.model import FGCLIPModel
from fgclip_lmm.model.activations import FusedQuickGELU

VARIANTS = {"unbucketed_unfused": (False, False), "bucketed": (True, False), "fused": (False, True),
            "bucketed_fused": (True, True)}
DEFAULT_BATCH = {"tiny": 8, "w256": 8, "b16": 64, "l14_336": 32}


def set_variant(model: FGCLIPModel, bucket: bool, fused: bool) -> None:
    model.bucket_texts = bucket
    for module in model.modules():
        if isinstance(getattr(module, "activation_fn", None), (QuickGELUActivation, FusedQuickGELU)):
            module.activation_fn = FusedQuickGELU() if fused else QuickGELUActivation()


def run(size: str, device: torch.device, batch: int, boxes: int = 4, negatives: int = 10, dtype: str = "fp32",
        repeats: int = 5, warmup: int = 1, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    config = presets.fgclip_config(size, hard_negatives_per_box=negatives)
    with torch.device(device):
        model = FGCLIPModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7, fused=device.type == "cuda")
    data = presets.fgclip_batch(config, batch, stage=2, boxes_per_image=boxes, negatives=negatives, seed=seed,
                                device=device, lengths="world")
    losses: dict[str, float] = {}

    def step(name: str):
        def call():
            set_variant(model, *VARIANTS[name])
            loss = common.train_step(model, data, optimizer, device, dtype)
            losses.setdefault(name, float(loss.detach()))  # first call: all variants see the same weights
        return call

    with torch.no_grad():  # the loss of every variant on identical weights, before any optimizer step
        same_weights = {}
        for name in VARIANTS:
            set_variant(model, *VARIANTS[name])
            same_weights[name] = float(model(**data)["loss"])
    times = common.interleaved({name: step(name) for name in VARIANTS}, device, warmup=warmup, repeats=repeats)
    med = {name: common.median(t) for name, t in times.items()}
    base = med["unbucketed_unfused"]
    pad = config.text_config.pad_token_id
    rows_all, distinct, width = presets.short_path_rows(data, pad)
    real = sum(int((data[k] != pad).sum() + data[k].shape[0]) for k in ("short_input_ids", "box_input_ids",
                                                                          "hard_input_ids"))
    rows = [{"variant": name, "batch": batch, "step_s": t, "speedup": common.ratio(base, t),
             "loss_same_weights": same_weights[name],
             "loss_diff_vs_unbucketed": abs(same_weights[name] - same_weights["unbucketed_unfused"])}
            for name, t in med.items()]
    return {"rows": rows, "times_s": times, "speedup": common.ratio(base, med["bucketed_fused"]),
            "text": {"short_rows": rows_all, "short_rows_distinct": distinct, "short_width": width,
                     "short_real_tokens": real, "long_width": data["long_input_ids"].shape[1]}}


def render(results: dict) -> str:
    out = []
    for size, res in results.items():
        t = res["text"]
        out.append(common.table(res["rows"], title=(
            f"\nStage-2 step, size {size} (short path: {t['short_rows']} rows, {t['short_rows_distinct']} distinct, "
            f"padded width {t['short_width']}, {t['short_real_tokens']} real tokens; long captions padded to "
            f"{t['long_width']})")))
        out.append(f"bucketed + fused vs the step before: {res['speedup']:.2f}x")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser("bench_stage2_step", __doc__, presets.SIZES)
    p.add_argument("--sizes", nargs="+", default=None, choices=list(presets.SIZES),
                   help="sizes to run (default: tiny and w256 on a CPU, b16 on a GPU)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default per size)")
    p.add_argument("--boxes", type=int, default=4)
    p.add_argument("--negatives", type=int, default=10)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default bf16 autocast on cuda")
    args = p.parse_args(argv)
    device = common.setup(args)
    gpu = device.type == "cuda"
    args.sizes = args.sizes or (["b16"] if gpu else ["tiny", "w256"])
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.repeats = args.repeats or (10 if gpu else 5)
    results = {size: run(size, device, args.batch or DEFAULT_BATCH.get(size, 8), args.boxes, args.negatives,
                         args.dtype, args.repeats, args.warmup, args.seed) for size in args.sizes}
    common.finish("bench_stage2_step", args, device, results, render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
