"""Deterministic tokenizers for the project's tiny models, trained with the `tokenizers` library.

Two tokenizers, both saved in Hugging Face format so `AutoTokenizer.from_pretrained(out_dir)` reloads them:

* `train_clip_tokenizer`: CLIP-style byte-level BPE (lower-cased text, CLIP's word-splitting regex, `</w>`
  end-of-word suffix, bos `<|startoftext|>`, eos `<|endoftext|>`, pad = eos, `model_max_length` 77). The
  post-processor adds bos/eos, so HF truncation keeps both (the FG-CLIP call sites rely on it;
  docs/model.md, "Tokenisation and pooling").
  Its special tokens take ids 0 (bos) and 1 (eos); the model core reads them from the tokenizer, never 49406/49407.
* `train_llm_tokenizer`: Llama-style BPE (metaspace `▁`, byte fallback through `<0x00>`..`<0xFF>` tokens, `<unk>`,
  `<s>`, `</s>`, `<pad>`, plus `<image>` for HF LLaVA) with the Vicuna-v1 chat template of
  `fgclip_lmm.lmm.templates` (the one definition training and inference share; docs/llava.md, "Conversation
  templates"), which accepts string and list content (`{"type": "image"}` / `{"type": "text"}` items).

Merges are learned by `bpe_learner.learn_merges` (ties broken by the pair itself, unlike the Rust trainer) and
ids are laid out in a fixed order, so identical inputs produce byte-identical files. `vocab_size` is an upper
bound: learning stops early when no pair occurs `min_frequency` times; `len(tokenizer)` is the real size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from fgclip_lmm.constants import IMAGE_TOKEN
from fgclip_lmm.data.bpe_learner import count_words, learn_merges
from fgclip_lmm.lmm.templates import VICUNA_SYSTEM, get_template

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
CLIP_MAX_LENGTH = 77
# CLIP's own word splitter (OpenAI `simple_tokenizer.py`), applied after lower-casing.
CLIP_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

LLM_UNK, LLM_BOS, LLM_EOS, LLM_PAD, LLM_IMAGE = "<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN


def _nonempty(texts: Iterable[str]) -> list[str]:
    corpus = [text for text in texts if text.strip()]
    if not corpus:
        raise ValueError("tokenizer training corpus is empty")
    return corpus


def _words(pipeline: Tokenizer, text: str) -> list[str]:
    """The words `pipeline` would hand to its BPE model for `text` (normalised, then pre-tokenised)."""
    normalized = pipeline.normalizer.normalize_str(text) if pipeline.normalizer is not None else text
    return [piece for piece, _ in pipeline.pre_tokenizer.pre_tokenize_str(normalized)]


def _merge_budget(vocab_size: int, fixed: int) -> int:
    if vocab_size <= fixed:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for merges: {fixed} base and special tokens")
    return vocab_size - fixed


def _vocab(base: Sequence[str], merges: Sequence[tuple[str, str]], tail: Sequence[str]) -> dict[str, int]:
    """Ids in a fixed order: `base`, each merge result in merge order (first occurrence), then `tail`."""
    ordered = dict.fromkeys([*base, *(a + b for a, b in merges), *tail])
    return {token: i for i, token in enumerate(ordered)}


def _clip_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    """CLIP's text pipeline around a BPE model: clean whitespace, lower-case, split words, map bytes."""
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    # CLIP's decoder turns "</w>" into a space; the ByteLevel decoder alone would keep the suffix.
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("</w>", " "), decoders.ByteLevel(), decoders.Strip(" ", 0, 1)]
    )
    return tokenizer


def train_clip_tokenizer(
    texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 1024, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a CLIP-style byte-level BPE on `texts`, save it to `out_dir` and return the HF tokenizer."""
    pipeline = _clip_pipeline(Tokenizer(models.BPE(end_of_word_suffix="</w>")))
    words = count_words(_nonempty(texts), lambda text: _words(pipeline, text))
    # CLIP's layout: the 256 byte symbols, the same with "</w>" (so any word is encodable), merges, then bos, eos.
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    base = byte_symbols + [b + "</w>" for b in byte_symbols]
    merges = learn_merges(
        words, lambda w: [*w[:-1], w[-1] + "</w>"], _merge_budget(vocab_size, len(base) + 2), min_frequency
    )
    vocab = _vocab(base, merges, [CLIP_BOS, CLIP_EOS])
    tokenizer = _clip_pipeline(Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>")))
    tokenizer.add_special_tokens([CLIP_BOS, CLIP_EOS])
    bos_id, eos_id = vocab[CLIP_BOS], vocab[CLIP_EOS]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS} $A {CLIP_EOS}",
        pair=f"{CLIP_BOS} $A {CLIP_EOS} {CLIP_BOS}:1 $B:1 {CLIP_EOS}:1",
        special_tokens=[(CLIP_BOS, bos_id), (CLIP_EOS, eos_id)],
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        pad_token=CLIP_EOS,
        unk_token=CLIP_EOS,
        model_max_length=CLIP_MAX_LENGTH,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )
    _save(hf, out_dir)
    return hf


def train_llm_tokenizer(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 1024,
    min_frequency: int = 2,
    extra_special_tokens: Sequence[str] = (LLM_IMAGE,),
) -> PreTrainedTokenizerFast:
    """Train a Llama-style BPE (byte fallback, `▁` word marker) with a Vicuna-v1 chat template; save and return it.

    Layout: `<unk>` 0, `<s>` 1, `</s>` 2, `<pad>` 3, the 256 byte tokens, the corpus alphabet, merges, then
    `extra_special_tokens`. `vocab_size` bounds everything but the extra special tokens.
    """
    specials = [LLM_UNK, LLM_BOS, LLM_EOS, LLM_PAD]
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    pipeline = Tokenizer(models.BPE(unk_token=LLM_UNK))
    pipeline.pre_tokenizer = metaspace
    # The template's fixed text is part of every conversation, so it always joins the corpus.
    corpus = _nonempty(texts) + [f"{VICUNA_SYSTEM} USER: ASSISTANT:"]
    words = count_words(corpus, lambda text: _words(pipeline, text))
    alphabet = sorted({ch for word in words for ch in word})
    base = specials + [f"<0x{b:02X}>" for b in range(256)] + alphabet
    merges = learn_merges(words, list, _merge_budget(vocab_size, len(base)), min_frequency)
    vocab = _vocab(base, merges, [])
    final = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=LLM_UNK, byte_fallback=True, fuse_unk=True))
    final.pre_tokenizer = metaspace
    final.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    final.add_special_tokens(specials + list(extra_special_tokens))
    bos_id = final.token_to_id(LLM_BOS)
    final.post_processor = processors.TemplateProcessing(
        single=f"{LLM_BOS} $A", pair=f"{LLM_BOS} $A {LLM_BOS}:1 $B:1", special_tokens=[(LLM_BOS, bos_id)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=final,
        bos_token=LLM_BOS,
        eos_token=LLM_EOS,
        unk_token=LLM_UNK,
        pad_token=LLM_PAD,
        extra_special_tokens=list(extra_special_tokens),
        padding_side="right",
        model_max_length=2048,
        model_input_names=["input_ids", "attention_mask"],
    )
    hf.chat_template = get_template("vicuna_v1").chat_template()
    _save(hf, out_dir)
    return hf


def _save(tokenizer: PreTrainedTokenizerFast, out_dir: str | os.PathLike) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
