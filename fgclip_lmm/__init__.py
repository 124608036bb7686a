"""fgclip-lmm: FG-CLIP fine-grained vision backbones for LLaVA-style LMMs.

`import fgclip_lmm` registers `AutoConfig` / `AutoModel` for `model_type: fgclip` and `fgclip2`, as Hugging Face
users expect.
"""
import os
import sys

__version__ = "0.1.0"


def register_auto_classes() -> None:
    """Register the Auto classes (imports torch and transformers' CLIP modules, ~5 s cold)."""
    from . import model  # noqa: F401  (importing the model package registers)


# The `fgclip-lmm` command defers registration to the subcommands that load models (they import
# `fgclip_lmm.model`), so `--help` and argument errors answer before torch is imported.
if os.path.basename(sys.argv[0] if sys.argv else "") != "fgclip-lmm":
    register_auto_classes()
