"""The tiny random LLaVA export: one builder for the lmms-eval plugin tests, `eval-lmm`, datagen's recaption step
and the benchmarks.

`build_tiny_llava(out, config)` goes through the project's own export path: a tiny CLIP tower and a tiny Llama
(`testing.models`, or directories given as `tower=` / `llm=`) assembled by `fgclip_lmm.lmm.assemble` into a stock
HF `LlavaForConditionalGeneration` + `LlavaProcessor` (FG-CLIP tower type, Vicuna-v1 template, `<image>` token).
With the defaults, 28 px images and 14 px patches give 4 image tokens. Weights are random, so answers are
arbitrary (byte soup that datagen's caption filter must reject), but every code path is the real one.

`TinyLlavaConfig(reply=...)` *wires* the text model (`wire_reply`): attention and MLP outputs are zeroed so the
last hidden state is the current token's embedding, and embeddings / LM head rows form a chain "last prompt
token -> reply token 1 -> ... -> eos"; greedy decoding then writes exactly `reply` for any image, which checks a
whole prompt -> generate -> decode path.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .models import write_tiny_clip, write_tiny_llm

QA_TEXTS = (
    "Is there a red circle in the image? Yes",
    "Is there a blue square in the image? No",
    "Is the green triangle large? Yes",
    "Is the yellow star on the left of the image? No",
    "Are there two purple circles in the image? Yes",
    "Answer the question using a single word or phrase.",
)


@dataclass(frozen=True)
class TinyLlavaConfig:
    """Sizes of the tiny export; `(image_size // patch_size) ** 2` is the number of image tokens."""

    image_size: int = 28
    patch_size: int = 14
    hidden: int = 32
    layers: int = 2
    tower: str = "fgclip"
    aspect: str = "pad"
    dtype: str = "float32"
    pad_to_multiple_of: int = 8
    texts: tuple[str, ...] = QA_TEXTS  # the LLM tokenizer's corpus
    vocab_size: int = 400  # a wired reply needs room for whole-word merges (distinct tokens): 600
    reply: str | None = None  # wire greedy decoding to write exactly this (see the module docstring)
    seed: int = 0


def wire_reply(model, prompt_last_id: int, reply_ids: list[int], eos_id: int) -> None:
    """Make greedy decoding after `prompt_last_id` emit `reply_ids` then `eos_id` (see the module docstring)."""
    chain = [prompt_last_id, *reply_ids]
    hidden = model.config.text_config.hidden_size
    if len(set(chain)) != len(chain) or eos_id in chain:
        raise ValueError("wire_reply needs distinct tokens: the prompt's last token, each reply token, then eos")
    if len(chain) > hidden:
        raise ValueError(f"reply of {len(reply_ids)} tokens does not fit a hidden size of {hidden}")
    text_model, head = model.model.language_model, model.lm_head
    with torch.no_grad():
        for layer in text_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head.weight.zero_()
        for dim, (token, following) in enumerate(zip(chain, [*reply_ids, eos_id], strict=True)):
            text_model.embed_tokens.weight[token].zero_()
            text_model.embed_tokens.weight[token, dim] = 1.0
            head.weight[following, dim] = 10.0


def _wire(model, processor, reply: str) -> None:
    from PIL import Image

    conversation = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (28, 28))},
                                                 {"type": "text", "text": "x"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    tokenizer = processor.tokenizer
    wire_reply(model, int(prompt["input_ids"][0, -1]), tokenizer(reply, add_special_tokens=False)["input_ids"],
               tokenizer.eos_token_id)


def build_tiny_llava(out_dir: str | os.PathLike, config: TinyLlavaConfig = TinyLlavaConfig(),
                     tower: str | Path | None = None, llm: str | Path | None = None) -> Path:
    """Assemble a tiny LLaVA (model + processor + assembly record) into `out_dir`; return the path.

    `tower` / `llm` take existing checkpoint directories (e.g. the benchmarks' real-size ones) instead of the
    tiny random ones `config` describes."""
    from fgclip_lmm.lmm.assemble import AssembleConfig, assemble, save_assembly

    with tempfile.TemporaryDirectory(prefix="fgclip_tiny_") as tmp:
        if tower is None:
            tower = write_tiny_clip(Path(tmp, "tower"), hidden=config.hidden, layers=config.layers,
                                    image_size=config.image_size, patch_size=config.patch_size, seed=config.seed)
        if llm is None:
            texts = (*config.texts, *([config.reply] if config.reply else []))
            llm = write_tiny_llm(Path(tmp, "llm"), hidden=config.hidden, layers=config.layers, heads=2, kv_heads=2,
                                 texts=texts, vocab_size=config.vocab_size, seed=config.seed)
        assembly = AssembleConfig(tower=f"{config.tower}:{tower}", llm=str(llm), out=str(out_dir),
                                  aspect=config.aspect, dtype=config.dtype,
                                  pad_to_multiple_of=config.pad_to_multiple_of, seed=config.seed)
        model, processor, meta = assemble(assembly)
        if config.reply is not None:
            _wire(model.eval(), processor, config.reply)
        return save_assembly(model, processor, meta, out_dir)
