"""FG-CLIP 2 vs FG-CLIP v1 stage-2 training step at the same tower sizes: step time ratio in one run.

Both models get the same tower widths, depths and heads (`presets.CLIP_SIZES`; FG-CLIP 2's text tower takes the
vision width, as SigLIP 2's does), the same batch (images, 4 boxes per image, 10 hard negatives per box, every box
phrase reused as its hard positive) and their own training text widths: v1 248 / 77 / 77 tokens (long / short /
box, the worst case its collator pads to), FG-CLIP 2 196 / 64 / 64 (always: it pools the last position). Images:
v1 S x S pixels (CLS + (S/p)^2 tokens), FG-CLIP 2 the same (S/p)^2 patches as one unpadded NaFlex grid.
One step = forward (all named terms), `loss.backward()`, `AdamW.step()`; the two are timed interleaved (ABBA) and
the table gives medians and their ratio, plus each step's analytic train FLOPs (`fgclip_lmm.train.flops`).

    python benchmarks/bench_fgclip2_step.py                       # tiny, CPU, < 1 min
    python benchmarks/bench_fgclip2_step.py --size b16 --device cuda --batch 64 --dtype bf16
"""
from __future__ import annotations

import common
import presets
import torch
from transformers import Siglip2TextConfig, Siglip2VisionConfig

from fgclip_lmm.model import FGCLIP2Config, FGCLIP2Model, FGCLIPModel
from fgclip_lmm.train.clip_fgclip2 import fgclip2_batch_flops
from fgclip_lmm.train.flops import train_flops

SIZES = ("tiny", "b16")


def fgclip2_config(size: str) -> FGCLIP2Config:
    """FG-CLIP 2 at the preset's vision tower; the text tower at the vision width (SigLIP 2 layout)."""
    spec = presets.CLIP_SIZES[size]
    vision = spec["vision"]
    grid = vision["image_size"] // vision["patch_size"]
    tower = {k: vision[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    vocab = spec["text"]["vocab_size"]
    text = Siglip2TextConfig(vocab_size=vocab, max_position_embeddings=64, bos_token_id=vocab - 2,
                             eos_token_id=vocab - 1, pad_token_id=vocab - 1, **tower)
    vision_config = Siglip2VisionConfig(patch_size=vision["patch_size"], num_patches=grid * grid, **tower)
    return FGCLIP2Config(text_config=text.to_dict(), vision_config=vision_config.to_dict())


def fgclip2_batch(config: FGCLIP2Config, v1_batch: dict, image_size: int, device) -> dict[str, torch.Tensor]:
    """The v1 batch's boxes and hard-negative packing with NaFlex images and FG-CLIP 2's text widths."""
    gen = torch.Generator().manual_seed(1)
    b, p = v1_batch["pixel_values"].shape[0], config.vision_config.patch_size
    grid = image_size // p
    vocab = config.text_config.vocab_size

    def texts(rows: int, length: int) -> torch.Tensor:
        return torch.randint(0, vocab - 2, (rows, length), generator=gen)

    k = v1_batch["boxes"].shape[0]
    group = 1 + config.hard_negatives_per_box
    box = texts(k, 64)
    hard = torch.cat([box.unsqueeze(1), texts(k * (group - 1), 64).view(k, group - 1, 64)], 1).reshape(-1, 64)
    batch = {"pixel_values": torch.randn(b, grid * grid, 3 * p * p, generator=gen),
             "pixel_attention_mask": torch.ones(b, grid * grid, dtype=torch.long),
             "spatial_shapes": torch.tensor([[grid, grid]] * b), "long_input_ids": texts(b, 196),
             "short_input_ids": texts(b, 64), "box_input_ids": box, "hard_input_ids": hard,
             **{key: v1_batch[key].cpu() for key in ("box_counts", "boxes", "hard_box_index", "hard_counts")}}
    return {key: value.to(device) for key, value in batch.items()}


def make_step(model, batch, device, dtype):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        common.train_step(model, batch, optimizer, device, dtype)
    return step


def run(size: str, device: torch.device, batch_size: int, dtype: str, repeats: int, warmup: int) -> dict:
    v1_config = presets.fgclip_config(size)
    v2_config = fgclip2_config(size)
    with torch.device(device):
        v1, v2 = FGCLIPModel(v1_config).train(), FGCLIP2Model(v2_config).train()
    v1_batch = presets.fgclip_batch(v1_config, batch_size, stage=2, boxes_per_image=4, device=device)
    v2_batch = fgclip2_batch(v2_config, v1_batch, v1_config.vision_config.image_size, device)
    v2(**v2_batch)["loss"].backward()  # every term is finite and reaches the parameters before timing
    v2.zero_grad(set_to_none=True)
    times = common.interleaved({"fgclip": make_step(v1, v1_batch, device, dtype),
                                "fgclip2": make_step(v2, v2_batch, device, dtype)},
                               device, warmup=warmup, repeats=repeats)
    med = {k: common.median(v) for k, v in times.items()}
    flops = {"fgclip": presets.fgclip_step_flops(v1_config, v1_batch)["train"],
             "fgclip2": train_flops(fgclip2_batch_flops(v2_config, v2_batch))}
    rows = [{"model": name, "step_s": med[name], "samples_per_s": batch_size / med[name],
             "train_gflop_per_step": flops[name] / 1e9,
             "params_m": sum(p.numel() for p in m.parameters()) / 1e6} for name, m in (("fgclip", v1),
                                                                                      ("fgclip2", v2))]
    return {"rows": rows, "ratio_step_fgclip2_over_fgclip": common.ratio(med["fgclip2"], med["fgclip"]),
            "ratio_flops_fgclip2_over_fgclip": common.ratio(flops["fgclip2"], flops["fgclip"]), "times_s": times}


def main() -> None:
    parser = common.base_parser("bench_fgclip2_step", __doc__, SIZES)
    parser.add_argument("--batch", type=int, default=4, help="images per step (4 boxes each, 10 negatives per box)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()
    device = common.setup(args)
    result = run(args.size, device, args.batch, args.dtype, args.repeats or 9, args.warmup)
    text = common.table(result["rows"], title=f"stage-2 training step, {args.size}, batch {args.batch}, {args.dtype}")
    text += (f"\nFG-CLIP 2 / v1 step time: {result['ratio_step_fgclip2_over_fgclip']:.2f}x "
             f"(analytic train FLOPs {result['ratio_flops_fgclip2_over_fgclip']:.2f}x)")
    common.finish("bench_fgclip2_step", args, device, result, text)


if __name__ == "__main__":
    main()
