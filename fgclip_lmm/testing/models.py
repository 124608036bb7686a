"""Tiny random towers and LLMs, built from stock transformers configs with a fixed seed and saved with
`save_pretrained` (safetensors), so each directory is interchangeable with a real checkpoint of its family.

* The tiny CLIP is `FGCLIPConfig.tiny` (one definition, also behind `train-clip --init_from tiny`):
  `write_clip_dir` saves a stock `CLIPModel` with any vision tower (the benchmarks' real sizes too) and the tiny
  text tower, plus a `CLIPImageProcessor`; `write_tiny_clip` is that with the tiny vision tower. Both the `clip`
  and the `fgclip` tower types load it.
* `write_tiny_siglip`: a `SiglipVisionModel` + `SiglipImageProcessor`.
* `write_tiny_llm`: a Llama (the project's Llama-style BPE, `<s>`/`</s>`/`<pad>`, untied embeddings) or a Qwen2
  (byte-level BPE with ChatML specials, no BOS, pad `<|endoftext|>`, tied embeddings like Qwen2-0.5B), with no
  `<image>` token yet (assemble adds it). `tokenizer=DIR` reuses an existing tokenizer (the demo's world one).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from fgclip_lmm.data.tokenizers import train_llm_tokenizer
from fgclip_lmm.model.configuration_fgclip import FGCLIPConfig

DEFAULT_TEXTS = (
    "a red cube on the left of a blue sphere",
    "what color is the small ball? the ball is green",
    "describe the image. a large yellow cylinder next to a purple cone",
    "is there a striped square? yes there is one striped square",
    "how many shapes are shown? three shapes",
    "the metal ring is above the wooden box",
)
LLM_ARCHS = ("llama", "qwen2")


def tiny_clip_config(width: int = 32, layers: int = 2, heads: int | None = None, image_size: int = 28,
                     patch_size: int = 14, projection_dim: int = 16) -> FGCLIPConfig:
    """`FGCLIPConfig.tiny` with LLaVA-friendly defaults (28 px images, 14 px patches: 4 image tokens)."""
    config = FGCLIPConfig.tiny(width=width, layers=layers, image_size=image_size, patch_size=patch_size,
                               projection_dim=projection_dim)
    if heads is not None:
        config.vision_config.num_attention_heads = heads
    return config


def write_clip_dir(out: str | Path, vision: CLIPVisionConfig, projection_dim: int, seed: int = 0,
                   device: torch.device | str = "cpu") -> Path:
    """A random full `CLIPModel` directory: `vision` as given, the tiny text tower, and a matching processor."""
    text = FGCLIPConfig.tiny(projection_dim=projection_dim).text_config
    torch.manual_seed(seed)
    with torch.device(device):
        model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                     projection_dim=projection_dim))
    out = Path(out)
    model.save_pretrained(out)
    size = vision.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out)
    return out


def write_tiny_clip(out: str | Path, hidden: int = 32, layers: int = 2, heads: int | None = None,
                    image_size: int = 28, patch_size: int = 14, seed: int = 0) -> Path:
    config = tiny_clip_config(hidden, layers, heads, image_size, patch_size)
    return write_clip_dir(out, config.vision_config, config.projection_dim, seed)


def write_tiny_siglip(out: str | Path, hidden: int = 32, layers: int = 2, heads: int = 4, image_size: int = 28,
                      patch_size: int = 14, seed: int = 0) -> Path:
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
    intermediate: int | None = None, texts: Sequence[str] = DEFAULT_TEXTS, vocab_size: int = 400,
    tokenizer: str | Path | None = None, max_positions: int = 512, seed: int = 0,
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", init_std: float | None = None,
) -> Path:
    """A random causal LM of `arch` (see the module docstring) with a tokenizer trained on `texts` (x4)."""
    if arch not in LLM_ARCHS:
        raise ValueError(f"unknown tiny LLM arch {arch!r}; known: {', '.join(LLM_ARCHS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = [t for t in texts for _ in range(4)]
    common = dict(hidden_size=hidden, intermediate_size=intermediate or 2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions)
    if init_std is not None:
        common["initializer_range"] = init_std
    if tokenizer is not None:
        tok = AutoTokenizer.from_pretrained(tokenizer)
        tok.save_pretrained(out)
    elif arch == "llama":
        tok = train_llm_tokenizer(corpus, out, vocab_size=vocab_size, extra_special_tokens=())
    else:
        tok = train_chatml_tokenizer(corpus, out, vocab_size=vocab_size)
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **common)
    else:  # Qwen2 checkpoints carry spare embedding rows beyond the tokenizer (assemble fills one with <image>)
        config = Qwen2Config(vocab_size=len(tok) + 7, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             tie_word_embeddings=True, **common)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out)
    return out
