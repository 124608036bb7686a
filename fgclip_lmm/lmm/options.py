"""Option names of LMM assembly and LoRA merging, kept free of torch so the command-line front-ends
(`fgclip_lmm.commands`) can validate arguments before the model code is imported."""
from __future__ import annotations

# LLaVA's image aspect modes (see `fgclip_lmm.lmm.assemble` for what each does).
ASPECT_MODES = ("pad", "square", "resize")
# torch dtype names accepted by `assemble --dtype` and `merge-lora --dtype` (besides "auto").
DTYPE_NAMES = ("float32", "bfloat16", "float16")
