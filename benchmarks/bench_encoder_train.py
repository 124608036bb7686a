"""FG-CLIP encoder training step, stage 1 and stage 2: samples/s, peak memory, MFU, and the text-dedup win.

One step = `FGCLIPModel(**batch)` forward, `loss.backward()`, `AdamW.step()`, on synthetic batches in the exact
collated format (`presets.fgclip_batch`, checked against the real `FGClipCollator` at start). Stage 1 batches
carry images + long + short captions; stage 2 adds boxes, box phrases and hard negatives (default 4 boxes per
image, 10 negatives each, all texts full length: the shape of docs/model.md, "Compute per step").

* MFU = analytic train FLOPs (`fgclip_lmm.train.flops.clip_tower_flops` x 3, as executed: distinct short-path
  rows) / median step time / the matmul peak measured in the same run (`measure_matmul_peak`), and on a GPU
  also / the 790 TFLOP/s nominal dense bf16 peak of an H200.
* Peak memory: `torch.cuda.max_memory_allocated` on a GPU; on a CPU the process RSS sampled during the steps.
* Dedup win (twice the repeats: the expected gain is small): the model's `_short_texts_once` (every distinct
  short-path text encoded once, one call) against encoding every text row group by group, interleaved in the same
  run: the text path alone (forward + backward) and the whole stage-2 step (the per-row variant is patched onto this
  model instance only).

    python benchmarks/bench_encoder_train.py                      # tiny, CPU, ~1 min
    python benchmarks/bench_encoder_train.py --size b16 --device cuda --batch1 256 --batch2 64
"""
from __future__ import annotations

import contextlib
import types

import common
import presets
import torch

from fgclip_lmm.model import FGCLIPModel
from fgclip_lmm.train.flops import measure_matmul_peak

H200_BF16_PEAK = 790e12
DEFAULT_BATCH = {"tiny": (8, 2), "b16": (256, 64), "l14_336": (64, 32)}


def per_row_short_texts(model: FGCLIPModel, groups: list[torch.Tensor]) -> list[torch.Tensor]:
    """The no-dedup baseline: every row of every group through the short path, one call per group."""
    return [model.text_projection(model.encode_text(g, walk_short_pos=True)) for g in groups]


def autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model, optimizer, batch, device, dtype):
    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
    return step


def make_text_pass(model, groups, device, dtype, dedup: bool):
    def run():
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            feats = model._short_texts_once(groups) if dedup else per_row_short_texts(model, groups)
            total = sum(f.float().sum() for f in feats)
        total.backward()
    return run


def matmul_peak(device: torch.device, dtype: str) -> float:
    if device.type == "cuda":
        return measure_matmul_peak(torch.bfloat16 if dtype == "bf16" else torch.float32, size=8192, seconds=1.0)
    return measure_matmul_peak(torch.float32, size=1024, seconds=0.5)


def build(size: str, negatives: int, device: torch.device) -> FGCLIPModel:
    config = presets.fgclip_config(size, hard_negatives_per_box=negatives)
    with torch.device(device):
        model = FGCLIPModel(config)
    return model.train()


def run(size: str, device: torch.device, batch1: int, batch2: int, boxes: int = 4, negatives: int = 10,
        dtype: str = "fp32", repeats: int = 5, warmup: int = 1, lengths: tuple[int, int, int] = (248, 77, 77),
        peak: float | None = None, stages: tuple[int, ...] = (1, 2)) -> dict:
    """Measure every requested stage plus the dedup ratios; returns a JSON-able dict (rows + details)."""
    model = build(size, negatives, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    peak = peak or matmul_peak(device, dtype)
    long_len, short_len, box_len = lengths
    rows, details = [], {"matmul_peak_flops": peak, "attn_implementation": model.config._attn_implementation,
                         "params": sum(p.numel() for p in model.parameters())}
    for stage in stages:
        b = batch1 if stage == 1 else batch2
        batch = presets.fgclip_batch(model.config, b, stage=stage, boxes_per_image=boxes, negatives=negatives,
                                     long_len=long_len, short_len=short_len, box_len=box_len, device=device)
        flops = presets.fgclip_step_flops(model.config, batch)
        step = make_step(model, optimizer, batch, device, dtype)
        with common.PeakMemory(device) as mem:
            times = common.measure(step, device, warmup=warmup, repeats=repeats)
        t = common.median(times)
        row = {"stage": stage, "batch": b, "step_s": t, "samples_per_s": b / t,
               "train_tflop_per_step": flops["train"] / 1e12,
               "achieved_tflops": flops["train"] / t / 1e12, "mfu_measured_peak": flops["train"] / t / peak,
               "peak_mem_mib": mem.peak / 2**20, "mem_delta_mib": mem.delta / 2**20,
               "text_flop_share": flops["text_share"]}
        if device.type == "cuda":
            row["mfu_790T"] = flops["train"] / t / H200_BF16_PEAK
        rows.append(row)
        details[f"stage{stage}"] = {"times_s": times, "flops": flops, "memory": mem.as_dict()}
        if stage == 2:
            details["dedup"] = dedup_ratios(model, optimizer, batch, device, dtype, 2 * repeats, warmup, flops)
        del batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "details": details}


def dedup_ratios(model, optimizer, batch, device, dtype, repeats, warmup, flops) -> dict:
    groups = presets.short_path_groups(batch)
    text = common.interleaved({"dedup": make_text_pass(model, groups, device, dtype, True),
                               "per_row": make_text_pass(model, groups, device, dtype, False)},
                              device, warmup=warmup, repeats=repeats)
    dedup_step = make_step(model, optimizer, batch, device, dtype)
    patched = types.MethodType(per_row_short_texts, model)

    def per_row_step():
        model._short_texts_once = patched
        try:
            dedup_step()
        finally:
            del model._short_texts_once
    step = common.interleaved({"dedup": dedup_step, "per_row": per_row_step}, device, warmup=warmup, repeats=repeats)
    med = {k: common.median(v) for k, v in text.items()}
    smed = {k: common.median(v) for k, v in step.items()}
    return {
        "short_rows_all": flops["short_rows_all"], "short_rows_distinct": flops["short_rows_distinct"],
        "text_path_s": med, "text_path_speedup": common.ratio(med["per_row"], med["dedup"]),
        "step_s": smed, "step_speedup": common.ratio(smed["per_row"], smed["dedup"]),
        "flop_ratio_short_path": common.ratio(flops["short_text_forward_all_rows"], flops["short_text_forward"]),
        "times_s": {"text_path": text, "step": step},
    }


def render(result: dict, size: str) -> str:
    cols = ["stage", "batch", "step_s", "samples_per_s", "achieved_tflops", "mfu_measured_peak", "mfu_790T",
            "peak_mem_mib", "mem_delta_mib", "text_flop_share"]
    cols = [c for c in cols if any(c in r for r in result["rows"])]
    d = result["details"]
    out = [common.table(result["rows"], cols, title=f"FG-CLIP training step, size {size} "
                        f"(matmul peak measured: {d['matmul_peak_flops'] / 1e12:.3g} TFLOP/s)")]
    if "dedup" in d:
        dd = d["dedup"]
        out.append(common.table([
            {"variant": "text path fwd+bwd", "dedup_s": dd["text_path_s"]["dedup"],
             "per_row_s": dd["text_path_s"]["per_row"], "speedup": dd["text_path_speedup"]},
            {"variant": "stage-2 step", "dedup_s": dd["step_s"]["dedup"], "per_row_s": dd["step_s"]["per_row"],
             "speedup": dd["step_speedup"]},
        ], title=f"\nShort-path text dedup (same run, interleaved medians): {dd['short_rows_distinct']} distinct of "
                 f"{dd['short_rows_all']} rows, FLOP ratio {dd['flop_ratio_short_path']:.3f}"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser("bench_encoder_train", __doc__, presets.SIZES)
    p.add_argument("--batch1", type=int, default=None, help="stage-1 batch (default per size)")
    p.add_argument("--batch2", type=int, default=None, help="stage-2 batch (default per size)")
    p.add_argument("--boxes", type=int, default=4, help="boxes per image (official max_anns 4)")
    p.add_argument("--negatives", type=int, default=10, help="hard negatives per box (official 10)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default bf16 autocast on cuda, fp32 on cpu")
    p.add_argument("--lengths", type=int, nargs=3, default=(248, 77, 77), metavar=("LONG", "SHORT", "BOX"))
    args = p.parse_args(argv)
    device = common.setup(args)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    b1, b2 = DEFAULT_BATCH[args.size]
    args.batch1, args.batch2 = args.batch1 or b1, args.batch2 or b2
    args.repeats = args.repeats or (10 if device.type == "cuda" else 5)
    reference = presets.collator_reference_batch(negatives=args.negatives)
    config = presets.fgclip_config("tiny", hard_negatives_per_box=args.negatives)
    presets.check_batch_contract(presets.fgclip_batch(config, 2, boxes_per_image=args.boxes), reference)
    result = run(args.size, device, args.batch1, args.batch2, args.boxes, args.negatives, args.dtype, args.repeats,
                 args.warmup, tuple(args.lengths))
    common.finish("bench_encoder_train", args, device, result, render(result, args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
