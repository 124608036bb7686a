"""A tiny random LLaVA export for offline smoke tests of the lmms-eval plugin and `eval-lmm`.

`build_tiny_llava(out_dir)` goes through the project's own export path: tiny random checkpoints from
`fgclip_lmm.lmm.tiny` (a 2-layer CLIP vision tower with 28 px images and 14 px patches = 4 image tokens, and a
2-layer Llama with the project's Llama-style tokenizer) assembled by `fgclip_lmm.lmm.assemble` into a stock HF
`LlavaForConditionalGeneration` + `LlavaProcessor` (FG-CLIP tower type, Vicuna-v1 template, `<image>` token).
Weights are random, so answers are arbitrary, but every code path (image tokens, batching, logits) is the real
one. Takes about two seconds on a CPU.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fgclip_lmm.lmm.assemble import AssembleConfig, assemble, save_assembly
from fgclip_lmm.lmm.tiny import write_tiny_clip, write_tiny_llm

_CORPUS = (
    "Is there a red circle in the image? Yes",
    "Is there a blue square in the image? No",
    "Is the green triangle large? Yes",
    "Is the yellow star on the left of the image? No",
    "Are there two purple circles in the image? Yes",
    "Answer the question using a single word or phrase.",
)


@dataclass(frozen=True)
class TinyLlavaSpec:
    """Sizes of the tiny export; `(image_size // patch_size) ** 2` is the number of image tokens."""

    image_size: int = 28
    patch_size: int = 14
    hidden: int = 32
    layers: int = 2
    tower: str = "fgclip"
    aspect: str = "pad"
    seed: int = 0


def build_tiny_llava(out_dir: str | os.PathLike, spec: TinyLlavaSpec = TinyLlavaSpec()) -> Path:
    """Assemble a random tiny LLaVA (model + processor + assembly record) into `out_dir`; return the path."""
    with tempfile.TemporaryDirectory(prefix="fgclip_tiny_") as tmp:
        tower = write_tiny_clip(Path(tmp, "tower"), hidden=spec.hidden, layers=spec.layers, heads=2,
                                image_size=spec.image_size, patch_size=spec.patch_size, seed=spec.seed)
        llm = write_tiny_llm(Path(tmp, "llm"), hidden=spec.hidden, layers=spec.layers, heads=2, kv_heads=2,
                             texts=_CORPUS, seed=spec.seed)
        config = AssembleConfig(tower=f"{spec.tower}:{tower}", llm=str(llm), out=str(out_dir), aspect=spec.aspect,
                                dtype="float32", pad_to_multiple_of=8, seed=spec.seed)
        model, processor, meta = assemble(config)
        return save_assembly(model, processor, meta, out_dir)
