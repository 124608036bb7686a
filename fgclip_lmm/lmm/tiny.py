"""Tiny random checkpoints for offline tests and the synthetic-world presets: towers and Llama / Qwen2 LLMs.

Everything is built from stock transformers configs with a fixed seed and saved with `save_pretrained`
(safetensors), so the directories are interchangeable with real checkpoints of the same families:

* `write_tiny_clip(out)`: a full `CLIPModel` directory (the format of OpenAI CLIP HF checkpoints, which both the
  `clip` and the `fgclip` tower load), plus a `CLIPImageProcessor`;
* `write_tiny_siglip(out)`: a `SiglipVisionModel` directory plus a `SiglipImageProcessor`;
* `write_tiny_llm(out, arch)`: `llama` (Llama-style BPE from `fgclip_lmm.data.tokenizers`, `<s>`/`</s>`/`<pad>`,
  no `<image>` yet, untied embeddings) or `qwen2` (byte-level BPE with ChatML specials, no BOS, pad = `<|endoftext|>`, no
  `<image>` yet, and tied embeddings like Qwen2-0.5B).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

DEFAULT_TEXTS = (
    "a red cube on the left of a blue sphere",
    "what color is the small ball? the ball is green",
    "describe the image. a large yellow cylinder next to a purple cone",
    "is there a striped square? yes there is one striped square",
    "how many shapes are shown? three shapes",
    "the metal ring is above the wooden box",
)


def write_tiny_clip(
    out: str | Path, hidden: int = 32, layers: int = 2, heads: int = 4, image_size: int = 28, patch_size: int = 14,
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    text = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  image_size=image_size, patch_size=patch_size)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    out = Path(out)
    model.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def write_tiny_siglip(
    out: str | Path, hidden: int = 32, layers: int = 2, heads: int = 4, image_size: int = 28, patch_size: int = 14,
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    config = SiglipVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
    out = Path(out)
    SiglipVisionModel(config).save_pretrained(out)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def train_chatml_tokenizer(texts: Sequence[str], out: str | Path, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A Qwen2-style byte-level BPE: ChatML specials, eos `<|im_end|>`, pad `<|endoftext|>`, no BOS."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 padding_side="right", model_max_length=2048)
    hf.save_pretrained(str(out))
    return hf


def write_tiny_llm(
    out: str | Path, arch: str = "llama", hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
    texts: Sequence[str] = DEFAULT_TEXTS, seed: int = 0,
) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = [t for t in texts for _ in range(4)]
    common = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512)
    if arch == "llama":
        from fgclip_lmm.data.tokenizers import train_llm_tokenizer

        tokenizer = train_llm_tokenizer(corpus, out, vocab_size=400, extra_special_tokens=())
        config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             tie_word_embeddings=False, **common)
    elif arch == "qwen2":
        tokenizer = train_chatml_tokenizer(corpus, out)
        config = Qwen2Config(vocab_size=len(tokenizer) + 7, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, **common)
    else:
        raise ValueError(f"unknown tiny LLM arch {arch!r}; known: llama, qwen2")
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out
