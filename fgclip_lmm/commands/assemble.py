"""`fgclip-lmm assemble`: tower + projector + LLM -> a stock HF `LlavaForConditionalGeneration` and `LlavaProcessor`.

What is written and how each option is used: `fgclip_lmm.lmm.assemble`.
"""
from __future__ import annotations

import argparse

from fgclip_lmm.constants import ASPECT_MODES, DTYPE_NAMES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fgclip-lmm assemble", description=__doc__.splitlines()[0])
    p.add_argument("--tower", required=True, help="TYPE:PATH with TYPE in fgclip, fgclip2, clip, siglip, hf")
    p.add_argument("--llm", required=True, help="causal LM directory or hub id (Llama/Vicuna-style or Qwen2-style)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--projector", default="mlp2x_gelu", help="linear | mlp2x_gelu | identity")
    p.add_argument("--projector-weights", default=None, help="safetensors/.bin projector to load (size-checked)")
    p.add_argument("--feature-layer", type=int, default=-2)
    p.add_argument("--select", default="patch", choices=["patch", "cls_patch"])
    p.add_argument("--image-size", type=int, default=None,
                   help="fgclip2 towers: input side in px of the fixed-grid export (default: the learned grid, "
                        "256 for B/16; e.g. 384 for 24x24)")
    p.add_argument("--aspect", default="pad", choices=list(ASPECT_MODES))
    p.add_argument("--template", default="auto", help="auto | plain | vicuna_v1 | qwen2")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES])
    p.add_argument("--pad-to-multiple-of", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fgclip_lmm.lmm.assemble import AssembleConfig, assemble, save_assembly

    cfg = AssembleConfig(
        tower=args.tower, llm=args.llm, out=args.out, projector=args.projector,
        projector_weights=args.projector_weights,
        feature_layer=args.feature_layer, select=args.select, image_size=args.image_size, aspect=args.aspect,
        template=args.template,
        dtype=args.dtype, pad_to_multiple_of=args.pad_to_multiple_of, seed=args.seed,
    )
    model, processor, meta = assemble(cfg)
    out = save_assembly(model, processor, meta, args.out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {cfg.tower} + {cfg.projector} + {cfg.llm}; {n_params / 1e6:.2f}M params, "
          f"{meta['image_seq_length']} tokens/image, template {meta['template']}, aspect {cfg.aspect}")
    return 0
