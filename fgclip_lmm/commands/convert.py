"""`fgclip-lmm convert SRC OUT`: write any supported checkpoint (ours, official FG-CLIP, OpenAI CLIP; FG-CLIP 2: ours,
official `qihoo360/fg-clip2-*`, SigLIP 2 NaFlex) as ours."""
from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgclip-lmm convert", description=__doc__.splitlines()[0],
                                     epilog="Safetensors only, with the source's tokenizer / processor files.")
    parser.add_argument("src", help="hub id or directory: ours, official qihoo360/fg-clip-* or qihoo360/fg-clip2-*, "
                        "openai/clip-vit-*, or a SigLIP 2 NaFlex checkpoint (google/siglip2-*-naflex, FG-CLIP 2 init)")
    parser.add_argument("out", help="output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fgclip_lmm.model.convert import (
        FGCLIP2_MODEL_TYPES,
        convert_checkpoint,
        convert_fgclip2_checkpoint,
    )
    from fgclip_lmm.model.loading import read_config, resolve_checkpoint_dir

    fgclip2 = read_config(resolve_checkpoint_dir(args.src)).get("model_type") in FGCLIP2_MODEL_TYPES
    out = (convert_fgclip2_checkpoint if fgclip2 else convert_checkpoint)(args.src, args.out)
    print(f"wrote {out}")
    return 0
