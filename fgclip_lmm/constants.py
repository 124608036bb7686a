"""Names shared across the package, defined once (no torch import: the CLI and the report read them cheaply).

* `POPE_SPLITS`: POPE's three negative-sampling splits, in the order LLaVA reports them.
* `ATTRIBUTES`: the MME-style yes/no attribute tasks of the synthetic world (`fgclip_attr_<kind>`), MME's
  American spelling "color".
* `FGOVD_SPLITS`: FG-OVD difficulty splits, hardest first (hard / medium / easy change 1 / 2 / 3 attributes,
  trivial swaps the noun).
* `IMAGE_TOKEN`: LLaVA's image placeholder in conversations, chat templates and tokenizers.
* `ASPECT_MODES`: LLaVA's image aspect modes (`fgclip_lmm.lmm.assemble` says what each does).
* `DTYPE_NAMES`: the floating-point dtypes a `--dtype` option takes (`fgclip_lmm.devices.torch_dtype` maps them).
"""
from __future__ import annotations

POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "position", "count", "existence")
FGOVD_SPLITS: tuple[str, ...] = ("hard", "medium", "easy", "trivial")
IMAGE_TOKEN = "<image>"
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
ASPECT_MODES: tuple[str, ...] = ("pad", "square", "resize")
