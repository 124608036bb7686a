"""fgclip-lmm: FG-CLIP fine-grained vision backbones for LLaVA-style LMMs."""
__version__ = "0.1.0"
