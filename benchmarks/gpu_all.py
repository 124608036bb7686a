"""One GPU run of the encoder, stage-2, POPE and tower benchmarks at real sizes (H200, bf16, SDPA) into $OUT.

Sections, each guarded (an error or an out-of-memory is recorded and the run goes on; on OOM the batch is halved
once), results written to `<out-dir>/gpu_all.json` after every section, run in this order (ViT-B/16 training, the
stage-2 comparison, POPE, then ViT-L/14 training, then the towers) so that the time budget cuts the least
important ones:

1. encoder training step (`bench_encoder_train.run`), stage 1 and stage 2, ViT-B/16 @224 and ViT-L/14 @336
   (random init from configs): samples/s, peak memory, MFU against the matmul peak measured at the start of this
   run and against 790 TFLOP/s dense bf16, the text-dedup speedup;
2. stage-2 step, length-bucketed text + fused QuickGELU vs the step before them (`bench_stage2_step.run`),
   ViT-B/16 @224 (batch 64) and ViT-L/14 @336 (batch 32), text lengths of the synthetic world;
3. tower inference (`bench_tower.run`): our `fgclip` tower (blocks after the feature layer not run) vs
   `CLIPVisionModel` hidden_states[-2], both sizes;
4. POPE-style evaluation (`bench_pope_eval.run`): `fgclip_llava` (with and without shared image prefixes) vs
   lmms-eval's `llava_hf` on one export with a ViT-L/14 @336 tower and a TinyLlama-1.1B-shaped random Llama (a 7B
   cannot be randomly built inside the budget).

Run it through `benchmarks/gpu_run.sh` (installs the carried wheels first; see benchmarks/README.md):

    bash benchmarks/gpu_run.sh                  # on the GPU machine; writes $OUT/gpu_all.{json,txt,log}
    python benchmarks/gpu_all.py --smoke        # every section at tiny sizes, on this CPU (~3 min), to test it
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
import types
from pathlib import Path

import common
import torch

H200_BF16_PEAK = 790e12
BUDGET_S = 450  # sections that would start after this many seconds are skipped (8-minute target)


def stub_if_missing(name: str, attrs: dict, notes: dict) -> None:
    """llava_hf imports `decord` (video only) and lmms-eval's registry `evaluate` (hub metrics only); neither is
    used here. When one does not import on the GPU machine, a placeholder module stands in and the JSON says so."""
    try:
        __import__(name)
    except Exception as error:  # noqa: BLE001 - any import failure (missing, ABI, version) gets the stub
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        sys.modules[name] = module
        notes[f"stubbed_{name}"] = f"{type(error).__name__}: {error}"


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def guarded(name: str, fn, report: dict, out: Path, started: float, retry_batch=None):
    """Run `fn(batch_scale)`; record its result or error under `name`; halve the batch once on CUDA OOM."""
    if time.monotonic() - started > BUDGET_S:
        report["sections"][name] = {"skipped": f"time budget ({BUDGET_S} s) reached"}
        return None
    begin = time.monotonic()
    scale = 1.0
    for attempt in range(2):
        try:
            result = fn(scale)
            report["sections"][name] = {"result": result, "seconds": time.monotonic() - begin, "batch_scale": scale}
            break
        except torch.cuda.OutOfMemoryError as error:
            free()
            report["sections"][name] = {"error": f"OutOfMemoryError at batch scale {scale}: {error}"[:2000]}
            if attempt == 0 and retry_batch:
                scale = 0.5
                continue
            break
        except Exception:  # noqa: BLE001 - a failed section must not lose the others
            report["sections"][name] = {"error": traceback.format_exc()[-4000:], "seconds": time.monotonic() - begin}
            break
    free()
    common.write_json(out / "gpu_all.json", report)
    entry = report["sections"][name]
    print(f"[{time.monotonic() - started:6.1f}s] {name}: "
          f"{'ok' if 'result' in entry else entry.get('skipped') or entry['error'].splitlines()[-1]}", flush=True)
    return entry.get("result")


def summary(report: dict) -> str:
    rows = []
    for name, entry in report["sections"].items():
        res = entry.get("result")
        if res is None:
            rows.append({"section": name, "metric": "ERROR/SKIPPED",
                         "value": (entry.get("skipped") or entry["error"].splitlines()[-1])[:90]})
            continue
        if name.startswith("encoder"):
            for r in res["rows"]:
                tag = f"stage{r['stage']} b{r['batch']}"
                rows += [{"section": name, "metric": f"{tag} samples/s", "value": r["samples_per_s"]},
                         {"section": name, "metric": f"{tag} MFU (measured peak)", "value": r["mfu_measured_peak"]},
                         {"section": name, "metric": f"{tag} MFU (790 TFLOP/s)",
                          "value": r.get("mfu_790T", float("nan"))},
                         {"section": name, "metric": f"{tag} peak mem GiB", "value": r["peak_mem_mib"] / 1024}]
            if "dedup" in res["details"]:
                d = res["details"]["dedup"]
                rows += [{"section": name, "metric": "dedup step speedup", "value": d["step_speedup"]},
                         {"section": name, "metric": "dedup text-path speedup", "value": d["text_path_speedup"]}]
        elif name.startswith("stage2"):
            for r in res["rows"]:
                rows.append({"section": name, "metric": f"{r['variant']} step s", "value": r["step_s"]})
            rows.append({"section": name, "metric": "bucketed+fused speedup (goal >= 2)", "value": res["speedup"]})
        elif name.startswith("tower"):
            for r in res["rows"]:
                rows.append({"section": name, "metric": f"{r['variant']} images/s", "value": r["images_per_s"]})
            rows += [{"section": name, "metric": "ours / CLIPVisionModel speed", "value": res["ratio_ours_over_hf"]},
                     {"section": name, "metric": "outputs equal", "value": res["check"]["equal"]}]
        elif name.startswith("pope"):
            for r in res["rows"]:
                rows.append({"section": name, "metric": f"{r['variant']} questions/s", "value": r["questions_per_s"]})
            rows += [{"section": name, "metric": "speedup vs llava_hf (goal >= 5)", "value": res["speedup"]},
                     {"section": name, "metric": "prefix sharing speedup", "value": res["prefix_sharing_speedup"]},
                     {"section": name, "metric": "answers identical", "value": res["all_identical"]}]
    peak = report.get("matmul_peak_flops")
    head = f"matmul peak measured: {peak / 1e12:.3g} TFLOP/s" if peak else "matmul peak: not measured"
    return common.table(rows, ["section", "metric", "value"], title=f"gpu_all summary ({head})")


def main(argv: list[str] | None = None) -> int:
    global BUDGET_S
    p = argparse.ArgumentParser(prog="benchmarks/gpu_all.py", description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT") or "runs/bench/gpu_all")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (runs on a CPU): tests the script itself")
    p.add_argument("--only", nargs="*", default=None,
                   help="section name prefixes to run (encoder, stage2, tower, pope)")
    p.add_argument("--budget-s", type=float, default=BUDGET_S)
    args = p.parse_args(argv)
    BUDGET_S = args.budget_s
    started = time.monotonic()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common.setup(argparse.Namespace(seed=0, threads=None, device=None))
    device = common.pick_device()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    report: dict = {"benchmark": "gpu_all", "smoke": args.smoke, "environment": common.environment(device),
                    "nominal_peak_flops": H200_BF16_PEAK, "sections": {}, "notes": {}}
    # before bench_pope_eval imports llava_hf (which imports decord)
    stub_if_missing("decord", {"VideoReader": None, "cpu": None}, report["notes"])
    stub_if_missing("evaluate", {"load": None}, report["notes"])
    import bench_encoder_train
    import bench_pope_eval
    import bench_stage2_step
    import bench_tower

    dtype = "bf16" if device.type == "cuda" else "fp32"
    report["matmul_peak_flops"] = peak = bench_encoder_train.matmul_peak(device, dtype)
    sizes = ["tiny"] if args.smoke else ["b16", "l14_336"]
    enc_batch = {"tiny": (8, 2), "b16": (256, 64), "l14_336": (64, 32)}
    tower_batch = {"tiny": 128, "b16": 256, "l14_336": 128}
    reps = 3 if args.smoke else 10

    def wanted(name: str) -> bool:
        return args.only is None or any(name.startswith(o) for o in args.only)

    stage2_batch = {"tiny": 8, "b16": 64, "l14_336": 32}
    pope = ("tiny", "tiny", 8, 16) if args.smoke else ("l14_336", "1b", 32, 32)
    sections = []  # (name, fn(batch_scale)) in priority order: the budget skips from the end
    for size in sizes:
        b1, b2 = enc_batch[size]
        for stage in (1, 2):
            sections.append((f"encoder_{size}_stage{stage}", lambda s, size=size, stage=stage, b1=b1, b2=b2:
                             bench_encoder_train.run(size, device, max(1, int(b1 * s)), max(1, int(b2 * s)),
                                                     dtype=dtype, repeats=reps, warmup=2, peak=peak, stages=(stage,))))
        sections.append((f"stage2_{size}", lambda s, size=size: bench_stage2_step.run(
            size, device, max(1, int(stage2_batch[size] * s)), dtype=dtype, repeats=3 if args.smoke else 6,
            warmup=2)))
        if size == sizes[0]:  # the evaluation speed-up before the second size's training sections
            sections.append(("pope_tiny" if args.smoke else "pope_l14_336_llama1b", lambda s: bench_pope_eval.run(
                pope[0], pope[1], device, pope[2], 6, max(1, int(pope[3] * s)),
                "bfloat16" if device.type == "cuda" else "float32", 3, repeats=2, warmup=1)))
    sections += [(f"tower_{size}", lambda s, size=size: bench_tower.run(
        size, device, max(1, int(tower_batch[size] * s)), dtype, repeats=reps, warmup=2)) for size in sizes]
    for name, fn in sections:
        if wanted(name):
            guarded(name, fn, report, out, started, retry_batch=True)
    report["total_seconds"] = time.monotonic() - started
    text = summary(report)
    print("\n" + text)
    (out / "gpu_all.txt").write_text(text + "\n")
    common.write_json(out / "gpu_all.json", report)
    print(f"\nwrote {out / 'gpu_all.json'} and {out / 'gpu_all.txt'} in {report['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
