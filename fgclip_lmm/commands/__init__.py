"""Command-line front-ends of `fgclip-lmm` whose implementations import torch / transformers at module level.

Each module here parses and checks its arguments with nothing heavier than argparse, then imports the
implementation (`fgclip_lmm.model.convert`, `fgclip_lmm.lmm.assemble`, `fgclip_lmm.lmm.merge_lora`, the tiny-LLM
builder), so `--help` and argument errors answer in well under 2 s (`benchmarks/bench_cli_startup.py`).
"""
