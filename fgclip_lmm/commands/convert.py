"""`fgclip-lmm convert SRC OUT`: write any supported checkpoint (ours, official FG-CLIP, OpenAI CLIP) as ours."""
from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgclip-lmm convert", description=__doc__.splitlines()[0],
                                     epilog="Safetensors only, with the source's tokenizer / processor files.")
    parser.add_argument("src", help="hub id or directory: ours, official qihoo360/fg-clip-*, or openai/clip-vit-*")
    parser.add_argument("out", help="output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fgclip_lmm.model.convert import convert_checkpoint

    out = convert_checkpoint(args.src, args.out)
    print(f"wrote {out}")
    return 0
