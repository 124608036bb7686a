"""CLIP-style and Llama-style tokenizers: HF round trip, special tokens, truncation, chat template, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from fgclip_lmm.data.tokenizers import (
    CLIP_BOS,
    CLIP_EOS,
    VICUNA_SYSTEM,
    train_clip_tokenizer,
    train_llm_tokenizer,
)

CORPUS = [
    "A small red striped circle at the top left.",
    "a LARGE blue dotted square in the centre",
    "Two objects: a green triangle and a tiny yellow star.",
    "Is there a red circle in the image? Yes.",
] * 4


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clip_tok")
    train_clip_tokenizer(CORPUS, out, vocab_size=700)
    return out


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llm_tok")
    train_llm_tokenizer(CORPUS, out, vocab_size=700)
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_clip_tokenizer_reloads_with_clip_conventions(clip_dir):
    tok = AutoTokenizer.from_pretrained(clip_dir)
    assert tok.model_max_length == 77
    assert tok.bos_token == CLIP_BOS and tok.eos_token == CLIP_EOS
    assert tok.pad_token_id == tok.eos_token_id
    # Like OpenAI CLIP, eos is the largest id, so argmax-pooling and first-eos pooling agree.
    assert tok.eos_token_id == len(tok) - 1 and tok.bos_token_id == len(tok) - 2
    ids = tok("A Small RED circle").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.tokenize("A Small RED circle") == ["a</w>", "small</w>", "red</w>", "circle</w>"]
    assert tok.decode(ids, skip_special_tokens=True) == "a small red circle"


def test_clip_truncation_keeps_bos_and_eos_and_pads_with_eos(clip_dir):
    tok = AutoTokenizer.from_pretrained(clip_dir)
    enc = tok(["word " * 300, "red"], max_length=12, padding="max_length", truncation=True)
    long_ids, short_ids = enc.input_ids
    assert len(long_ids) == 12 and long_ids[0] == tok.bos_token_id and long_ids[-1] == tok.eos_token_id
    assert tok.eos_token_id not in long_ids[1:-1]
    assert short_ids[:1] == [tok.bos_token_id] and short_ids[3:] == [tok.eos_token_id] * 9


def test_clip_unseen_characters_are_encodable(clip_dir):
    tok = AutoTokenizer.from_pretrained(clip_dir)
    text = "zebra über"  # (CLIP splits digits one by one, so "42" would decode as "4 2")
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_llm_tokenizer_special_tokens_and_byte_fallback(llm_dir):
    tok = AutoTokenizer.from_pretrained(llm_dir)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    assert tok.convert_tokens_to_ids("<image>") not in (None, tok.unk_token_id)
    ids = tok("Zebra ünïcode").input_ids
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "Zebra ünïcode"
    assert tok.tokenize("a small red circle") == ["▁a", "▁small", "▁red", "▁circle"]


def test_llm_chat_template_is_vicuna_v1_for_string_and_list_content(llm_dir):
    tok = AutoTokenizer.from_pretrained(llm_dir)
    chat = [
        {"role": "user", "content": "<image>\nWhat colour is the circle?"},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "And its size?"},
    ]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"{VICUNA_SYSTEM} USER: <image>\nWhat colour is the circle? ASSISTANT: Red.</s>USER: And its size? ASSISTANT:"
    )
    as_list = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    listed = tok.apply_chat_template(as_list, tokenize=False, add_generation_prompt=True)
    assert listed == f"{VICUNA_SYSTEM} USER: <image>\nWhat colour? ASSISTANT:"
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(system, tokenize=False) == "Be brief. USER: Hi "
    ids = tok(text).input_ids
    assert ids.count(tok.eos_token_id) == 1 and ids.count(tok.convert_tokens_to_ids("<image>")) == 1


def test_training_is_deterministic_and_order_independent(tmp_path, clip_dir, llm_dir):
    train_clip_tokenizer(list(reversed(CORPUS)), tmp_path / "clip", vocab_size=700)
    train_llm_tokenizer(list(reversed(CORPUS)), tmp_path / "llm", vocab_size=700)
    assert _files(tmp_path / "clip") == _files(clip_dir)
    assert _files(tmp_path / "llm") == _files(llm_dir)


def test_empty_corpus_and_tiny_vocab_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        train_clip_tokenizer(["", "  "], tmp_path / "a")
    with pytest.raises(ValueError, match="vocab_size"):
        train_clip_tokenizer(CORPUS, tmp_path / "b", vocab_size=300)
