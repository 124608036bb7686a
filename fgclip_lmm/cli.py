"""The `fgclip-lmm` command: a thin dispatcher to each job's own `main(argv)`.

Subcommands are imported lazily, and each imports torch / transformers / DeepSpeed / lmms-eval only after its
arguments parse, so `--help` and argument errors answer at once (`benchmarks/bench_cli_startup.py`).
Every subcommand runs under `errors.run_command`: bad data, configs, checkpoints and command-line values print
one line naming the file, record and field (exit status 2); `--debug` (anywhere on the command line) or
`FGCLIP_DEBUG=1` adds the traceback.
"""
from __future__ import annotations

import importlib
import os
import sys

from fgclip_lmm.errors import DEBUG_ENV, debug_requested, run_command

# name -> (module, one-line help). Every module exposes `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("fgclip_lmm.commands.convert", "convert an OpenAI CLIP or official FG-CLIP checkpoint to ours"),
    "synth": ("fgclip_lmm.data.synth_cli", "generate the synthetic fine-grained world"),
    "train-clip": ("fgclip_lmm.train.clip_trainer", "train FG-CLIP (stage 1 / stage 2) on DeepSpeed, one process"),
    "train-lmm": ("fgclip_lmm.train.lmm_trainer", "train a LLaVA-style LMM (align / finetune) on DeepSpeed"),
    "assemble": ("fgclip_lmm.commands.assemble", "assemble tower + projector + LLM into a stock HF LLaVA checkpoint"),
    "merge-lora": ("fgclip_lmm.commands.merge_lora", "merge a LoRA adapter into a full HF LLaVA checkpoint"),
    "eval-lmm": ("fgclip_lmm.eval.lmm.cli", "run lmms-eval hallucination / attribute tasks and write tables"),
    "eval-clip": ("fgclip_lmm.eval.clip.cli", "encoder benchmarks: fgovd, boxcls, retrieval, zeroshot"),
    "datagen": ("fgclip_lmm.datagen.cli", "build FineHARD-style data from your own images"),
    "demo": ("fgclip_lmm.demo", "run the whole pipeline on the synthetic world and write a report"),
    "tiny-llm": ("fgclip_lmm.commands.tiny_llm", "write a small random Llama over a tokenizer (CPU walkthrough)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fgclip-lmm [--debug] COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Bad input prints one line and exits 2; --debug (or FGCLIP_DEBUG=1) shows the traceback."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv, debug = debug_requested(list(sys.argv[1:] if argv is None else argv))
    if debug:  # the subcommand's own guard, its DataLoader workers and launched ranks see it too
        os.environ[DEBUG_ENV] = "1"
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fgclip-lmm: unknown command {name!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(name, lambda args: importlib.import_module(COMMANDS[name][0]).main(args), rest)


if __name__ == "__main__":
    sys.exit(main())
