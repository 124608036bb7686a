"""The small-LMM trainer behind bench_lmm_recipe.py: the demo's align + finetune on cached tower features.

The tower is frozen in both LLaVA stages, so its features are a function of the image: they are computed once per
image (`fgclip_lmm.tower.build_tower`, the demo's feature layer and patch tokens) and each arm trains only what
train-lmm trains, the stock HF projector (`LlavaMultiModalProjector`) and the LLM (`LlamaForCausalLM`), in the same
way: the world's LLaVA JSON encoded by `fgclip_lmm.lmm.encode.encode_sample` (plain template for align, the
arm's template for finetune; answer-only labels; `<image>` expanded to the tower's tokens), image tokens spliced
at the `<image>` positions, AdamW with warmup + cosine, clipping 1.0. Not train-lmm itself because an arm would
then cost a DeepSpeed engine and a tower forward per step, and the table needs a dozen arms on a laptop.

Evaluation asks the world's POPE and MME-style questions (the parquet files eval-lmm reads) and reads P(yes) from
the first answer token, with the image, a gray image and another image of the set (eval-lmm's controls).
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import LlavaConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from fgclip_lmm.constants import POPE_SPLITS
from fgclip_lmm.data.synth.records import SHORT_ANSWER
from fgclip_lmm.lmm.dataset import pad_tokens
from fgclip_lmm.lmm.encode import IGNORE_INDEX, SampleError, encode_sample
from fgclip_lmm.lmm.health import image_token_health
from fgclip_lmm.lmm.projector_init import match_text_weights
from fgclip_lmm.train.task import warmup_cosine

IMAGE_TOKEN = "<image>"


@torch.no_grad()
def tower_features(tower_dir: str, images: list[Image.Image], batch: int = 128) -> torch.Tensor:
    from fgclip_lmm.tower import TowerConfig, build_tower

    tower = build_tower(TowerConfig(type="fgclip", path=tower_dir, feature_layer=-2, select="patch"))
    out = []
    for i in range(0, len(images), batch):
        pixels = tower.image_processor(images=images[i:i + batch], return_tensors="pt")["pixel_values"]
        out.append(tower(pixels).float())
    return torch.cat(out)


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]
    image: int | None  # row of the feature bank


def encode_rows(rows: list[dict], image_rows: dict[str, int], tokenizer, template: str, n_img: int,
                max_len: int) -> tuple[list[Encoded], int]:
    out, truncated = [], 0
    for row in rows:
        try:
            sample = encode_sample(row, tokenizer, template, n_img, max_len)
        except SampleError:
            continue
        truncated += sample.truncated
        image = image_rows[row["image"]] if row.get("image") and sample.num_images else None
        out.append(Encoded(sample.input_ids, sample.labels, image))
    return out, truncated


def projector_for(vision_hidden: int, text_hidden: int, seed: int) -> LlavaMultiModalProjector:
    config = LlavaConfig(vision_config={"model_type": "clip_vision_model", "hidden_size": vision_hidden,
                                        "num_attention_heads": 1},
                         text_config={"model_type": "llama", "hidden_size": text_hidden, "num_attention_heads": 1,
                                      "num_key_value_heads": 1},
                         projector_hidden_act="gelu", multimodal_projector_bias=True)
    torch.manual_seed(seed)
    return LlavaMultiModalProjector(config)


def splice(llm, projector, feats: torch.Tensor, ids: torch.Tensor, rows: list[int | None], image_id: int):
    """Input embeddings with the projected features of `rows` at the `<image>` positions (stock masked_scatter)."""
    embeds = llm.get_input_embeddings()(ids.clamp_max(llm.config.vocab_size - 1))
    used = [r for r in rows if r is not None]
    if used:
        tokens = projector(feats[used]).reshape(-1, embeds.shape[-1])
        embeds = embeds.masked_scatter((ids == image_id).unsqueeze(-1), tokens.to(embeds.dtype))
    return embeds


def collate(batch: list[Encoded], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    padded = pad_tokens([(e.ids, e.labels) for e in batch], pad)
    return padded["input_ids"], padded["labels"], padded["attention_mask"]


def train_stage(llm, projector, feats, data: list[Encoded], steps: int, lr: float, batch: int, image_id: int,
                pad: int, train_llm: bool, seed: int, warmup_ratio: float = 0.05) -> float:
    for p in llm.parameters():
        p.requires_grad_(train_llm)
    params = [*projector.parameters(), *(llm.parameters() if train_llm else [])]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    factor = warmup_cosine(max(1, math.ceil(warmup_ratio * steps)), steps, 0.0)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    start = time.perf_counter()
    llm.train()
    for step in range(steps):
        if len(order) < batch:
            order += torch.randperm(len(data), generator=generator).tolist()
        picked, order = [data[i] for i in order[:batch]], order[batch:]
        ids, labels, mask = collate(picked, pad)
        for group in optimizer.param_groups:
            group["lr"] = lr * factor(step)
        embeds = splice(llm, projector, feats, ids, [e.image for e in picked], image_id)
        loss = llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    llm.eval()
    return time.perf_counter() - start


@torch.no_grad()
def health(llm, projector, feats: torch.Tensor, text_ids: torch.Tensor) -> dict[str, float]:
    return image_token_health(projector(feats[:64]), llm.get_input_embeddings()(text_ids))


@torch.no_grad()
def init_match_text(llm, projector, feats: torch.Tensor, text_ids: torch.Tensor) -> dict[str, float]:
    return match_text_weights(projector, feats[:64], llm.get_input_embeddings()(text_ids).float())


@dataclass
class Question:
    kind: str  # "pope_<split>" or an MME category
    question: str  # the prompt text eval-lmm asks (task post_prompt applied)
    yes: bool
    image: int  # row of the feature bank


def world_questions(world, limit: int) -> tuple[list[Question], list[Image.Image]]:
    """POPE (3 splits) and MME-style rows of the world's parquet files, up to `limit` per split / category; images
    decoded once each (keyed by bytes)."""
    frames = [(f"pope_{s}", pd.read_parquet(world.path("pope", s))) for s in POPE_SPLITS]
    mme = pd.read_parquet(world.path("mme"))
    frames += [(c, mme[mme["category"] == c]) for c in sorted(mme["category"].unique())]
    # the prompts eval-lmm's task YAMLs build: lmms-eval's own doc_to_text with the tasks' post_prompt
    from lmms_eval.tasks.mme.utils import mme_doc_to_text
    from lmms_eval.tasks.pope.utils import pope_doc_to_text

    prompts = {True: pope_doc_to_text, False: mme_doc_to_text}
    prompt_kwargs = {"pre_prompt": "", "post_prompt": SHORT_ANSWER}
    images: dict[bytes, int] = {}
    decoded: list[Image.Image] = []
    out = []
    for kind, frame in frames:
        for row in frame.head(limit).itertuples():
            data = row.image["bytes"] if isinstance(row.image, dict) else row.image
            if data not in images:
                images[data] = len(decoded)
                decoded.append(Image.open(io.BytesIO(data)).convert("RGB"))
            prompt = prompts[kind.startswith("pope_")]({"question": row.question}, prompt_kwargs)
            out.append(Question(kind, prompt, str(row.answer).strip().lower() == "yes", images[data]))
    return out, decoded


@torch.no_grad()
def p_yes(llm, projector, feats, questions: list[Question], rows: list[int], tokenizer, n_img: int,
          image_id: int, pad: int, template: str, batch: int = 64) -> np.ndarray:
    """P(yes) renormalised over the first answer tokens of "Yes" and "No" (the arm's template, image first)."""
    def encoded(q: Question, answer: str):
        row = {"id": "q", "image": "x", "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{q.question}"},
                                                           {"from": "gpt", "value": answer}]}
        return encode_sample(row, tokenizer, template, n_img, 4096)
    if not questions:
        return np.zeros(0)
    probe_yes, probe_no = encoded(questions[0], "Yes"), encoded(questions[0], "No")
    at_answer = next(k for k, t in enumerate(probe_yes.labels) if t != IGNORE_INDEX)
    yes_id, no_id = probe_yes.input_ids[at_answer], probe_no.input_ids[at_answer]  # the same after every prompt
    out = []
    for i in range(0, len(questions), batch):
        chunk = [encoded(q, "Yes") for q in questions[i:i + batch]]
        first = [next(k for k, t in enumerate(s.labels) if t != IGNORE_INDEX) for s in chunk]
        items = [Encoded(s.input_ids[:f], [IGNORE_INDEX] * f, r)
                 for s, f, r in zip(chunk, first, rows[i:i + batch], strict=True)]
        ids, _, mask = collate(items, pad)
        logits = llm(inputs_embeds=splice(llm, projector, feats, ids, [e.image for e in items], image_id),
                     attention_mask=mask).logits
        at = logits[torch.arange(len(chunk)), torch.tensor([f - 1 for f in first])]
        out.append(torch.sigmoid(at[:, yes_id] - at[:, no_id]))
    return torch.cat(out).numpy()


def derangement(rows: list[int], seed: int) -> dict[int, int]:
    """Each distinct image -> another image of the set (a shifted random order: no image maps to itself)."""
    unique = sorted(set(rows))
    order = np.random.default_rng(seed).permutation(unique)
    return {int(a): int(b) for a, b in zip(order, np.roll(order, 1), strict=True)}


def evaluate(llm, projector, feats, questions: list[Question], gray_row: int, tokenizer, n_img: int, image_id: int,
             pad: int, template: str, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per kind: accuracy with the image / gray / shuffled (%), visual gain, yes-rate; POPE kinds add F1."""
    rows = [q.image for q in questions]
    shuffle = derangement(rows, seed)
    runs = {"image": rows, "gray": [gray_row] * len(rows), "shuffled": [shuffle[r] for r in rows]}
    probs = {k: p_yes(llm, projector, feats, questions, r, tokenizer, n_img, image_id, pad, template)
             for k, r in runs.items()}
    truth = np.array([q.yes for q in questions])
    kinds = np.array([q.kind for q in questions])
    out = {}
    for kind in dict.fromkeys(kinds):
        m = kinds == kind
        acc = {k: float(((p[m] > 0.5) == truth[m]).mean() * 100) for k, p in probs.items()}
        pred = probs["image"][m] > 0.5
        entry = {**acc, "gain": acc["image"] - max(acc["gray"], acc["shuffled"]), "yes_rate": float(pred.mean() * 100)}
        if kind.startswith("pope_"):
            tp, fp = int((pred & truth[m]).sum()), int((pred & ~truth[m]).sum())
            fn = int((~pred & truth[m]).sum())
            entry["f1"] = 200 * tp / max(1, 2 * tp + fp + fn)
        out[str(kind)] = entry
    return out
