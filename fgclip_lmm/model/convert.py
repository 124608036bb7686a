"""`fgclip-lmm convert SRC OUT`: write any supported checkpoint (ours, official FG-CLIP, OpenAI CLIP) as ours.

Safetensors only, with the source's tokenizer / processor files; the formats themselves are read in `loading.py`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .loading import resolve_checkpoint_dir
from .modeling_fgclip import FGCLIPModel

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
              "preprocessor_config.json", "processor_config.json")


def convert_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Write any supported checkpoint as ours (safetensors) plus its tokenizer / processor files."""
    src_dir, out = resolve_checkpoint_dir(src), Path(out)
    model = FGCLIPModel.from_pretrained(src_dir)
    model.save_pretrained(out)  # HF writes model.safetensors
    for name in SIDE_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, out / name)
    return out
