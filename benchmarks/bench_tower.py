"""Vision-tower inference images/s: our `fgclip` tower against transformers' `CLIPVisionModel` on the same weights.

Random weights of the preset size are saved once as a CLIP checkpoint; our tower (`build_tower(TowerConfig(
"fgclip", path))`, `forward(pixel_values)` -> LLaVA features: hidden_states[-2] without the CLS token) and
`CLIPVisionModel.from_pretrained(path)` called as LLaVA calls it (`output_hidden_states=True`, then
`hidden_states[-2][:, 1:]`) load those files, run under `no_grad` in the same dtype, and are timed interleaved.
The outputs must be equal. Our tower never runs the blocks after its feature layer (`fgclip_lmm.tower.blocks`),
so it does 1/L less work than the HF call, which computes the last block and discards it. A third variant, the
same HF model loaded with one layer fewer and read at `last_hidden_state`, is the reference for that saving.

    python benchmarks/bench_tower.py                                     # tiny, CPU, ~30 s
    python benchmarks/bench_tower.py --size l14_336 --device cuda --batch 128
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import common
import presets
import torch
from transformers import CLIPVisionModel

from fgclip_lmm.tower import TowerConfig, build_tower

DEFAULT_BATCH = {"tiny": 128, "b16": 256, "l14_336": 128}


def load_models(path: Path, device: torch.device, dtype: torch.dtype):
    ours = build_tower(TowerConfig(type="fgclip", path=str(path))).to(device=device, dtype=dtype)
    hf = CLIPVisionModel.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    layers = hf.config.num_hidden_layers
    short = CLIPVisionModel.from_pretrained(path, dtype=dtype, attn_implementation="sdpa",
                                            num_hidden_layers=layers - 1).to(device).eval()
    return ours, hf, short


def run(size: str, device: torch.device, batch: int, dtype: str = "fp32", repeats: int = 5, warmup: int = 1,
        workdir: str | None = None) -> dict:
    torch_dtype = common.precision_dtype(dtype)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = presets.write_clip_checkpoint(size, Path(tmp) / "clip", device)
        ours, hf, short = load_models(path, device, torch_dtype)
    image = presets.vision_config(size).image_size
    pixels = torch.randn(batch, 3, image, image, generator=torch.Generator().manual_seed(1)).to(device, torch_dtype)

    def run_ours():
        return ours(pixels)

    @torch.no_grad()
    def run_hf():
        return hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]

    @torch.no_grad()
    def run_short():
        return short(pixel_values=pixels).last_hidden_state[:, 1:]

    a, b, c = run_ours(), run_hf(), run_short()
    check = {"shape": list(a.shape), "equal": bool(torch.equal(a, b)),
             "max_abs_diff": float((a.float() - b.float()).abs().max()),
             "skip_last_block_max_abs_diff": float((c.float() - b.float()).abs().max()),
             "attn_implementation": {"ours": ours.vision_tower.config._attn_implementation,
                                     "hf": hf.config._attn_implementation}}
    times = common.interleaved({"fgclip_tower": run_ours, "hf_clip_vision": run_hf, "hf_skip_last_block": run_short},
                               device, warmup=warmup, repeats=repeats)
    med = {k: common.median(v) for k, v in times.items()}
    rows = [{"variant": k, "batch": batch, "median_s": t, "images_per_s": batch / t,
             "vs_hf": common.ratio(med["hf_clip_vision"], t)} for k, t in med.items()]
    return {"rows": rows, "check": check, "times_s": times,
            "ratio_ours_over_hf": common.ratio(med["hf_clip_vision"], med["fgclip_tower"])}


def render(result: dict, size: str, dtype: str) -> str:
    c = result["check"]
    return "\n".join([
        common.table(result["rows"], title=f"Tower inference, {size}, {dtype} (vs_hf = HF median time / variant's)"),
        (f"ours vs CLIPVisionModel hidden_states[-2]: equal={c['equal']} (max |diff| {c['max_abs_diff']:.3g}); "
         f"speed ratio {result['ratio_ours_over_hf']:.3f}x; skipping the discarded last block: max |diff| "
         f"{c['skip_last_block_max_abs_diff']:.3g}"),
    ])


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser("bench_tower", __doc__, presets.SIZES)
    p.add_argument("--batch", type=int, default=None, help="images per call (default per size)")
    p.add_argument("--dtype", choices=list(common.PRECISIONS), default=None, help="default bf16 on cuda, fp32 on cpu")
    args = p.parse_args(argv)
    device = common.setup(args)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    args.batch = args.batch or DEFAULT_BATCH[args.size]
    args.repeats = args.repeats or (10 if device.type == "cuda" else 21)
    result = run(args.size, device, args.batch, args.dtype, args.repeats, args.warmup)
    common.finish("bench_tower", args, device, result, render(result, args.size, args.dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
