"""`fgclip-lmm merge-lora --base DIR --adapter DIR --out DIR`: a LoRA adapter -> one full stock HF LLaVA checkpoint.

A LoRA run of `train-lmm` already writes the merged model to `OUT/hf` (and the adapter to `OUT/adapter`); this
command is for adapters trained elsewhere or merged onto another base. How the merge works:
`fgclip_lmm.lmm.merge_lora`.
"""
from __future__ import annotations

import argparse

from fgclip_lmm.constants import DTYPE_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgclip-lmm merge-lora", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the full LLaVA checkpoint the adapter was trained on")
    parser.add_argument("--adapter", required=True, help="directory written by export.save_lora")
    parser.add_argument("--out", required=True, help="output directory for the merged checkpoint")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fgclip_lmm.lmm.merge_lora import merge_lora

    out = merge_lora(args.base, args.adapter, args.out, args.dtype)
    print(f"wrote {out}: {args.base} + {args.adapter} merged")
    return 0
