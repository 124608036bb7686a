"""Text-only pretraining of a small causal LM on LLaVA-JSON conversations (the demo's and the walkthrough's LLM).

LLaVA starts from a pretrained LLM (Vicuna, Qwen2); the synthetic world's LLM is random, and a random tiny LLM
never learns to look things up in its context: trained on images directly it stays at chance (issue 15). This step
gives it that skill on text first: conversations whose first turn describes the scene in words
(`fgclip-lmm synth` writes them to `llava/text.json`) rendered with the same chat template and answer-only labels
as `train-lmm` (`fgclip_lmm.lmm.encode.encode_sample`), so the later image conversations differ only in where the
scene comes from.

A plain PyTorch loop, not DeepSpeed or `transformers.Trainer`: it runs once, on a CPU, on a model of a few
million parameters, and must stay a few seconds of overhead; real LLMs arrive pretrained and never pass here.
The checkpoint is written to a temporary directory and renamed into place (a killed run leaves no partial model).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fgclip_lmm.errors import InputError

from ..train.task import warmup_cosine
from .dataset import pad_tokens
from .encode import SampleError, encode_sample


@dataclass(frozen=True)
class TextPretrainConfig:
    data: str               # LLaVA JSON (a list of {"id", "conversations"}); rows with an "image" are refused
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    warmup_ratio: float = 0.05
    template: str = "vicuna_v1"
    model_max_length: int = 512
    seed: int = 0


def read_text_conversations(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read LLaVA JSON ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{path}: expected a non-empty JSON list of conversations")
    for k, row in enumerate(rows):
        if not isinstance(row, dict) or "conversations" not in row:
            raise InputError(f"{path} record {k}: field 'conversations' missing")
        if row.get("image"):
            raise InputError(f"{path} record {k} ({row.get('id')}): field 'image' set; text pretraining takes "
                             "text-only conversations")
    return rows


def encode_rows(rows: list[dict], tokenizer, cfg: TextPretrainConfig) -> tuple[list[tuple[list, list]], dict]:
    """(input_ids, labels) per usable row, and the skip counts by reason (truncated rows are kept and counted)."""
    encoded, skipped, truncated = [], {}, 0
    for row in rows:
        try:
            sample = encode_sample(row, tokenizer, cfg.template, image_seq_length=1,
                                   model_max_length=cfg.model_max_length)
        except SampleError as error:
            skipped[error.reason] = skipped.get(error.reason, 0) + 1
            continue
        truncated += sample.truncated
        encoded.append((sample.input_ids, sample.labels))
    return encoded, {"skipped": skipped, "truncated": truncated, "used": len(encoded)}


def pretrain_text(llm_dir: str | Path, out: str | Path, cfg: TextPretrainConfig, progress: bool = True) -> dict:
    """Train the causal LM in `llm_dir` on `cfg.data`; write model + tokenizer + `text_pretrain.json` to `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = read_text_conversations(cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32)
    data, counts = encode_rows(rows, tokenizer, cfg)
    if not data:
        raise InputError(f"{cfg.data}: no usable conversation (skips by reason: {counts['skipped']})")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator = torch.Generator().manual_seed(cfg.seed)
    factor = warmup_cosine(max(1, int(cfg.warmup_ratio * cfg.steps)), cfg.steps, 0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    model.train()
    order: list[int] = []
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="text pretrain", disable=not progress, dynamic_ncols=True)
    for step in bar:
        if len(order) < cfg.batch_size:  # epochs of fresh permutations, no sample repeated within one
            order += torch.randperm(len(data), generator=generator).tolist()
        idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
        batch = pad_tokens([data[i] for i in idx], pad)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * factor(step)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    seconds = time.perf_counter() - start
    window = max(1, min(50, cfg.steps // 10))
    record = {"config": asdict(cfg), "source": str(llm_dir), **counts, "seconds": round(seconds, 1),
              "loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window,
              "losses": losses}
    save_atomically(model, tokenizer, record, Path(out))
    return record


def save_atomically(model, tokenizer, record: dict, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "text_pretrain.json").write_text(json.dumps(record, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
