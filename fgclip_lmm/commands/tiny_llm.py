"""`fgclip-lmm tiny-llm --tokenizer DIR --out DIR`: a small random Llama over a given tokenizer, for CPU runs.

The LLM of the laptop walkthrough and of the demo (the same builder, `fgclip_lmm.demo.pipeline.write_demo_llm`):
a `LlamaForCausalLM` with `--hidden` width (heads = hidden / 16, key-value heads = hidden / 32), `--layers`
layers, untied embeddings, the tokenizer's vocabulary and special tokens, random weights from `--seed`, saved with
the tokenizer as a stock HF directory that `fgclip-lmm assemble --llm DIR` takes. Use the synthetic world's LLM
tokenizer (`WORLD/tokenizers/llm`, written by `fgclip-lmm synth`) or any HF tokenizer directory.

`--pretrain-text WORLD/llava/text.json` then trains it on text-only conversations (the world's questions with the
scene written out in words) before it is saved, so that it can look things up in its context before it ever sees
image tokens (`fgclip_lmm.lmm.text_pretrain`; without it the demo's LMM answers from text priors, issue 15).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fgclip-lmm tiny-llm", description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="tokenizer directory, e.g. runs/world/tokenizers/llm")
    p.add_argument("--out", required=True, help="output directory (a HF causal-LM checkpoint)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size: 16, 48 or a multiple of 32 (default 64)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.add_argument("--init-std", type=float, default=None,
                   help="initializer_range of the random weights (default: Llama's 0.02; the demo uses 0.125)")
    p.add_argument("--pretrain-text", default=None, help="text-only LLaVA JSON to pretrain on (WORLD/llava/text.json)")
    p.add_argument("--pretrain-steps", type=int, default=600, help="optimizer steps of --pretrain-text (default 600)")
    p.add_argument("--pretrain-lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--pretrain-batch", type=int, default=32, help="conversations per step (default 32)")
    p.add_argument("--pretrain-template", default="vicuna_v1",
                   help="chat template of the text (use the LMM's, `assemble --template`; default vicuna_v1)")
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None (no model code imported)."""
    heads, kv_heads = max(1, args.hidden // 16), max(1, args.hidden // 32)
    if args.hidden < 16 or args.hidden % 16 or heads % kv_heads:
        return f"--hidden {args.hidden}: use 16, 48 or a multiple of 32 (heads = hidden/16, kv heads = hidden/32)"
    if args.layers < 1:
        return f"--layers {args.layers}: must be >= 1"
    tokenizer = Path(args.tokenizer)
    if not tokenizer.is_dir():
        return f"--tokenizer {tokenizer}: no such directory (the world's is WORLD/tokenizers/llm)"
    if not any((tokenizer / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return f"--tokenizer {tokenizer}: no tokenizer.json, tokenizer.model or vocab.json in it"
    if args.pretrain_text is not None and not Path(args.pretrain_text).is_file():
        return f"--pretrain-text {args.pretrain_text}: no such file (the world's is WORLD/llava/text.json)"
    from fgclip_lmm.lmm.templates import TEMPLATES

    if args.pretrain_template not in TEMPLATES:
        return f"--pretrain-template {args.pretrain_template}: unknown; known: {', '.join(TEMPLATES)}"
    if args.pretrain_steps < 1 or args.pretrain_batch < 1 or args.pretrain_lr <= 0:
        return "--pretrain-steps and --pretrain-batch must be >= 1 and --pretrain-lr > 0"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"fgclip-lmm tiny-llm: error: {problem}", file=sys.stderr)
        return 2
    from transformers.utils import logging

    from fgclip_lmm.demo.pipeline import write_demo_llm

    logging.disable_progress_bar()  # no "Writing model shards" bar for a one-file checkpoint
    out = write_demo_llm(Path(args.out), Path(args.tokenizer), args.hidden, args.layers, args.seed, args.init_std)
    config = json.loads((out / "config.json").read_text())
    kind = "random"
    if args.pretrain_text:
        from fgclip_lmm.lmm.text_pretrain import TextPretrainConfig, pretrain_text

        record = pretrain_text(out, out, TextPretrainConfig(args.pretrain_text, args.pretrain_steps,
                                                            args.pretrain_batch, args.pretrain_lr,
                                                            template=args.pretrain_template, seed=args.seed))
        kind = (f"text-pretrained ({args.pretrain_steps} steps on {record['used']} conversations, loss "
                f"{record['loss_first']:.3f} -> {record['loss_last']:.3f}, {record['seconds']:.0f} s)")
    print(f"wrote {out}: {kind} Llama, hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
          f"{config['num_attention_heads']} heads, vocabulary {config['vocab_size']}, seed {args.seed}")
    return 0
