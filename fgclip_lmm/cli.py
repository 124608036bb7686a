"""The `fgclip-lmm` command: a thin dispatcher to each job's own `main(argv)`.

Subcommands are imported lazily so that `fgclip-lmm synth` does not pay for DeepSpeed or lmms-eval imports.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Every module exposes `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("fgclip_lmm.model.convert", "convert an OpenAI CLIP or official FG-CLIP checkpoint to ours"),
    "synth": ("fgclip_lmm.data.synth_cli", "generate the synthetic fine-grained world"),
    "train-clip": ("fgclip_lmm.train.clip_trainer", "train FG-CLIP (stage 1 / stage 2) on DeepSpeed, one process"),
    "train-lmm": ("fgclip_lmm.train.lmm_trainer", "train a LLaVA-style LMM (align / finetune) on DeepSpeed"),
    "assemble": ("fgclip_lmm.lmm.assemble", "assemble tower + projector + LLM into a stock HF LLaVA checkpoint"),
    "merge-lora": ("fgclip_lmm.lmm.merge_lora", "merge a LoRA adapter into a full HF LLaVA checkpoint"),
    "eval-lmm": ("fgclip_lmm.eval.lmm.cli", "run lmms-eval hallucination / attribute tasks and write tables"),
    "eval-clip": ("fgclip_lmm.eval.clip.cli", "encoder benchmarks: fgovd, boxcls, retrieval, zeroshot"),
    "datagen": ("fgclip_lmm.datagen.cli", "build FineHARD-style data from your own images"),
    "demo": ("fgclip_lmm.demo", "run the whole pipeline on the synthetic world and write a report"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fgclip-lmm COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fgclip-lmm: unknown command {name!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
