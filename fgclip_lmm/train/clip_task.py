"""The FG-CLIP training task: stage 1 (global long/short) and stage 2 (+ regional, hard negatives); `model:
fgclip2` trains FG-CLIP 2 on the same readers (its differences live in `clip_fgclip2.py`).

Model construction is `build_model` (one builder per `model` key in `MODEL_BUILDERS`); the loop around it is
`loop.run_training`. Each checkpoint also holds an HF export (`hf/`), and the last one becomes OUT/hf.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..model import FGCLIPConfig, FGCLIPModel
from . import checkpoint as ckpt
from .clip_config import CLIP_MODELS, ClipTrainConfig
from .clip_data import build_clip_data
from .clip_fgclip2 import build_fgclip2_model, fgclip2_batch_flops, fgclip2_hard_negative_accuracy
from .config_io import ConfigError
from .flops import clip_tower_flops, train_flops
from .report import DataReport
from .runtime import restore_scalar_shapes
from .task import TrainTask, enable_checkpointing, reading, warmup_cosine

NO_DECAY = re.compile(r"(layer_?norm|layrnorm|\.bias$|^logit_scale|^logit_bias)", re.IGNORECASE)


def build_fgclip(cfg: ClipTrainConfig, tokenizer, resuming: bool) -> FGCLIPModel:
    if cfg.init_from == "tiny":
        config = FGCLIPConfig.tiny(vocab_size=len(tokenizer), image_size=cfg.image_size, patch_size=cfg.tiny_patch,
                                   width=cfg.tiny_width, layers=cfg.tiny_layers, logit_scale_max=cfg.logit_scale_max)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(config.text_config, key, getattr(tokenizer, key))
        torch.manual_seed(cfg.seed)
        model = FGCLIPModel(config)
    else:
        model = FGCLIPModel.from_pretrained(cfg.init_from)
        model.config.logit_scale_max = cfg.logit_scale_max
        model.criterion = type(model.criterion)(model.config.region_loss_weight, model.config.hard_loss_weight,
                                                logit_scale_max=cfg.logit_scale_max)
    if cfg.reset_fine_grained_scales and not resuming:
        with torch.no_grad():  # official: both fine-grained temperatures start at the global one (fresh runs only)
            model.logit_scale_finegraind.copy_(model.logit_scale)
            model.logit_scale_hardneg.copy_(model.logit_scale)
    return model


# `model` key -> builder(cfg, tokenizer, resuming) -> model whose forward(**batch) returns the loss terms.
MODEL_BUILDERS: dict[str, Callable] = {"fgclip": build_fgclip, "fgclip2": build_fgclip2_model}
assert set(MODEL_BUILDERS) == set(CLIP_MODELS), "clip_config.CLIP_MODELS lists the builders' names"


def build_model(cfg: ClipTrainConfig, tokenizer, resuming: bool) -> torch.nn.Module:
    """The model `train-clip` trains: built by its `model` builder, frozen by `freeze`, checkpointed if asked."""
    if cfg.model not in MODEL_BUILDERS:
        raise ConfigError(f"config key 'model': {cfg.model!r}; known: {sorted(MODEL_BUILDERS)}")
    model = MODEL_BUILDERS[cfg.model](cfg, tokenizer, resuming)
    for name, p in model.named_parameters():
        if any(re.search(pattern, name) for pattern in cfg.freeze):
            p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def param_groups(model: torch.nn.Module, cfg: ClipTrainConfig) -> list[dict]:
    """Official groups: no decay on norms, biases (and temperatures); an optional separate lr for the text tower."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (not NO_DECAY.search(name), cfg.text_lr is not None and name.startswith("text_model."))
            groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
             "lr": cfg.text_lr if text else cfg.lr} for (decay, text), ps in sorted(groups.items())]


def batch_flops(model_config, batch: dict) -> float:
    if model_config.model_type == "fgclip2":
        return train_flops(fgclip2_batch_flops(model_config, batch))
    texts = [tuple(batch[k].shape) for k in ("long_input_ids", "short_input_ids", "box_input_ids",
                                              "hard_input_ids") if k in batch]
    return train_flops(clip_tower_flops(model_config, batch["pixel_values"].shape[0], texts))


class ClipTask(TrainTask):
    command = "train-clip"
    show = ("loss", "hard_neg", "samples_per_s", "mfu")
    eval_metric = "eval/hard_neg_acc"

    def __init__(self, cfg: ClipTrainConfig):
        super().__init__(cfg)
        self.units_per_micro_batch = cfg.micro_batch_size  # the sampler counts samples
        self.tokenizer = None
        self.data = None

    def build_model(self, resuming: bool) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(self.cfg.tokenizer or self.cfg.init_from)
        self.module = build_model(self.cfg, self.tokenizer, resuming)

    def build_data(self) -> None:
        from ..data.bad_records import BadRecordPolicy

        policy = BadRecordPolicy(self.cfg.on_bad_record)
        self.report = DataReport(policy.report)
        with reading(self.cfg.data_path):
            self.data = build_clip_data(self.cfg, self.tokenizer, self.module.config, self.rank, self.world, policy)
        self.report.mark_loaded()
        self.sampler = self.data.sampler

    @property
    def num_samples(self) -> int:
        return len(self.data.dataset)

    def micro_batches_per_epoch(self) -> int:
        return self.sampler.num_samples // self.cfg.micro_batch_size

    def batches(self):
        return self.data.loader(self.cfg.micro_batch_size, self.cfg.num_workers)

    def param_groups(self) -> list[dict]:
        return param_groups(self.module, self.cfg)

    def lr_factor(self, total_steps: int):
        return warmup_cosine(self.cfg.warmup_steps, total_steps, self.cfg.min_lr_ratio)

    def forward(self, engine, batch: dict) -> dict[str, torch.Tensor]:
        return engine(**batch)

    def count(self, batch: dict) -> dict[str, float]:
        return {"samples": batch["pixel_values"].shape[0], "flops": batch_flops(self.module.config, batch)}

    def evaluate(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        if not (cfg.eval_every and cfg.eval_data and step % cfg.eval_every == 0):
            return {}
        from .clip_eval import hard_negative_accuracy

        model = self.module
        was_training = model.training
        model.eval()
        with torch.no_grad():
            if cfg.model == "fgclip2":
                result = fgclip2_hard_negative_accuracy(model, self.tokenizer, cfg, limit=cfg.eval_limit)
            else:
                result = hard_negative_accuracy(model, self.tokenizer, cfg.eval_data, cfg.eval_image_root or None,
                                                image_size=cfg.image_size, limit=cfg.eval_limit)
        model.train(was_training)
        return {f"eval/{k}": float(v) for k, v in result.items()}

    def checkpoint_export(self, engine, staging: Path) -> None:
        """`hf/` inside every checkpoint: a `from_pretrained` directory (ZeRO-3 gathers it on every rank)."""
        state = engine._zero3_consolidated_16bit_state_dict() if self.cfg.zero_stage == 3 else None
        if self.rank == 0:
            module = engine.module
            state = restore_scalar_shapes(state, module) if state is not None else module.state_dict()
            module.save_pretrained(staging / "hf", state_dict={k: v.float() for k, v in state.items()})
            self.tokenizer.save_pretrained(staging / "hf")

    def export(self, engine, out: Path) -> Path:
        """Copy the last checkpoint's HF export to OUT/hf atomically."""
        final = out / "hf"
        if self.rank == 0:
            source = ckpt.latest_complete(out / "checkpoints")
            staging = ckpt.staging_dir(final)
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source / "hf", staging)
            ckpt.publish(staging, final, {"source": str(source)})
        torch.distributed.barrier()
        return final
