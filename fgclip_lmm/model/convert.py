"""`fgclip-lmm convert SRC OUT`: write any supported checkpoint (ours, official FG-CLIP, OpenAI CLIP; FG-CLIP 2: ours,
official `qihoo360/fg-clip2-*`, SigLIP 2 NaFlex) as ours.

Safetensors only, with the source's tokenizer / processor files; the formats themselves are read in `loading.py` and
`loading_fgclip2.py`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .loading import resolve_checkpoint_dir
from .modeling_fgclip import FGCLIPModel
from .modeling_fgclip2 import FGCLIP2Model
from .naflex import make_image_processor

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
              "preprocessor_config.json", "processor_config.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
FGCLIP2_SIDE_FILES = (*(n for n in SIDE_FILES if n not in PROCESSOR_FILES), "tokenizer.model", "added_tokens.json")
FGCLIP2_MODEL_TYPES = ("fgclip2", "siglip2")  # FG-CLIP 2 and the SigLIP 2 checkpoints it starts from


def convert_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Write any supported checkpoint as ours (safetensors) plus its tokenizer / processor files."""
    src_dir, out = resolve_checkpoint_dir(src), Path(out)
    model = FGCLIPModel.from_pretrained(src_dir)
    model.save_pretrained(out)  # HF writes model.safetensors
    for name in SIDE_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, out / name)
    return out


def convert_fgclip2_checkpoint(src: str | Path, out: str | Path) -> Path:
    """Write an official FG-CLIP 2 or SigLIP 2 checkpoint as ours (safetensors) plus tokenizer / processor files."""
    src_dir, out = resolve_checkpoint_dir(src), Path(out)
    model = FGCLIP2Model.from_pretrained(src_dir)
    model.save_pretrained(out)
    for name in FGCLIP2_SIDE_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, out / name)
    # The official processor file names remote code (`Fgclip2ImageProcessor`); transformers' NaFlex processor does
    # the same work (see naflex.py), so ours is written instead, keeping the source's patch budget.
    processor_file = src_dir / "preprocessor_config.json"
    budget = json.loads(processor_file.read_text()).get("max_num_patches", 256) if processor_file.is_file() else 256
    make_image_processor(model.config.vision_config.patch_size, int(budget)).save_pretrained(out)
    return out

