"""LLaVA-style LMM presets for the benchmarks: random Llama LLMs and exported HF LLaVA checkpoints.

LLM shapes (random init; the tokenizer is the project's Llama-style BPE trained on the benchmark's own texts, so
the vocabulary is a few hundred tokens, not 32k: the LM head is the one part smaller than the real model's):

| shape  | hidden | layers | heads / kv heads | MLP  | what it stands for |
|--------|--------|--------|------------------|------|--------------------|
| `tiny` | 64     | 2      | 4 / 2            | 128  | CPU plumbing runs |
| `small`| 256    | 2      | 4 / 2            | 688  | CPU training runs where compute, not Python overhead, dominates |
| `mid`  | 512    | 8      | 8 / 8            | 1376 | CPU eval runs, prefill dominates (`mid336`: 576 image tokens) |
| `1b`   | 2048   | 22     | 32 / 4           | 5632 | TinyLlama-1.1B's shape; random init in seconds on a GPU |

`build_export` goes through the project's own path: `presets.write_clip_checkpoint` (tower) + `write_llm`, then
`fgclip_lmm.lmm.assemble` (FG-CLIP tower type, mlp2x_gelu projector, Vicuna-v1 template) and `save_assembly`:
a stock `LlavaForConditionalGeneration` + `LlavaProcessor` directory that both lmms-eval wrappers load.
"""
from __future__ import annotations

from pathlib import Path

import presets
import torch

from fgclip_lmm.testing import TinyLlavaConfig, build_tiny_llava, write_tiny_llm

LLM_SHAPES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 128},
    "small": {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 688},
    "mid": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
            "intermediate_size": 1376},
    "1b": {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
               "intermediate_size": 5632},
}
CORPUS = (
    "Is there a red circle in the image? Yes",
    "Is there a blue square in the image? No",
    "Is there a green triangle in the image? Yes",
    "Is there a yellow star in the image? No",
    "Is there a purple car in the image? Yes",
    "Describe the image. A large orange cylinder next to a small cyan cone on the left.",
    "What color is the ball? The ball is green and it is above the wooden box.",
    "Answer the question using a single word or phrase.",
)


def write_llm(shape: str, out: Path, texts=CORPUS, device: torch.device | str = "cpu", seed: int = 0,
              dtype: torch.dtype = torch.float32) -> Path:
    """A random Llama of `shape` plus a tokenizer trained on `texts`, saved with `save_pretrained`."""
    s = LLM_SHAPES[shape]
    return write_tiny_llm(out, "llama", hidden=s["hidden_size"], layers=s["num_hidden_layers"],
                          heads=s["num_attention_heads"], kv_heads=s["num_key_value_heads"],
                          intermediate=s["intermediate_size"], texts=texts, vocab_size=600, max_positions=2048,
                          seed=seed, dtype=dtype, device=device)


def build_export(tower_size: str, llm_shape: str, out: Path, device: torch.device | str = "cpu",
                 dtype: str = "float32", texts=CORPUS, aspect: str = "pad") -> Path:
    """Assemble tower + projector + LLM into an HF LLaVA export at `out` (model, processor, assembly record)."""
    out = Path(out)
    tower = presets.write_clip_checkpoint(tower_size, out.parent / f"{out.name}_tower", device)
    weights = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    llm = write_llm(llm_shape, out.parent / f"{out.name}_llm", texts, device, dtype=weights)
    return build_tiny_llava(out, TinyLlavaConfig(aspect=aspect, dtype=dtype, pad_to_multiple_of=64), tower, llm)
