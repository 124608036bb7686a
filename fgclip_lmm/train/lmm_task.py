"""The LLaVA-style instruction-tuning task: stage `align` (projector only) and `finetune` (LLM full or LoRA).

Model construction is `build_model` (the assembled LLaVA checkpoint, then `apply_tuning`); the loop around it is
`loop.run_training`. Outputs: OUT/hf (a stock HF LLaVA checkpoint, LoRA merged), OUT/adapter (LoRA runs: adapter +
non-LoRA trainables), OUT/mm_projector.safetensors (align), OUT/checkpoints/step_* (DeepSpeed state for resume).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoProcessor, LlavaForConditionalGeneration

from ..data.llava_json import LlavaJsonConfig, LlavaJsonDataset
from ..errors import InputError
from ..lmm.assemble import read_meta
from ..lmm.dataset import LmmCollator, LmmSupervisedDataset, image_seq_length
from ..lmm.export import merge_peft, save_full, save_lora, save_projector
from ..lmm.forward import lmm_forward
from ..lmm.grouping import GroupedBatchSampler
from ..lmm.health import ImageTokenProbe
from ..lmm.tuning import LmmTuning, apply_tuning, trainable_summary, unwrap_llava
from ..tower.base import LmmLoraConfig
from ..tower.blocks import prepare_llava_tower
from . import checkpoint as ckpt
from .flops import lmm_train_flops
from .lmm_config import LmmTrainConfig
from .report import DataReport
from .runtime import restore_scalar_shapes
from .task import TrainTask, enable_checkpointing, reading, warmup_cosine


class LmmTrainingModule(nn.Module):
    """What the DeepSpeed engine wraps: a LLaVA model (or its peft wrapper) whose forward is `lmm_forward`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return lmm_forward(self.model, **batch)


def param_groups(model: nn.Module, cfg: LmmTrainConfig) -> list[dict]:
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay = p.ndim >= 2 and "norm" not in name
            projector = "multi_modal_projector" in name and cfg.projector_lr is not None
            groups.setdefault((decay, projector), []).append(p)
    return [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
             "lr": cfg.projector_lr if projector else cfg.lr} for (decay, projector), ps in sorted(groups.items())]


class LmmTask(TrainTask):
    command = "train-lmm"
    show = ("loss", "tokens_per_s", "mfu", "image_norm_ratio", "image_cosine")

    def __init__(self, cfg: LmmTrainConfig):
        super().__init__(cfg)
        self.meta: dict = {}
        self.template = ""
        self.processor = None
        self.model = None  # the LLaVA model or its peft wrapper (`self.module` wraps it for the engine)
        self.dataset: LmmSupervisedDataset | None = None
        self.collator: LmmCollator | None = None
        self.step_flops = None
        self.health: ImageTokenProbe | None = None  # image-token norm ratio / cosine of each logged step
        self.resuming = False
        self.init_note = ""  # what projector_init did, for the run's first log line

    def build_model(self, resuming: bool) -> None:
        cfg = self.cfg
        self.resuming = resuming
        self.meta = read_meta(cfg.model)
        self.template = cfg.template if cfg.template != "auto" else (
            "plain" if cfg.stage == "align" else self.meta["template"])
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        # ZeRO-3-safe: the full model is loaded on every rank before the engine partitions it (no partial loads).
        model = LlavaForConditionalGeneration.from_pretrained(cfg.model, dtype=torch.float32)
        tuning = LmmTuning(llm=cfg.llm_mode, tower=cfg.tower_tuning, projector="full",
                           lora=LmmLoraConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
        self.model = apply_tuning(model, tuning)
        prepare_llava_tower(model)  # skip the tower blocks after vision_feature_layer, fused QuickGELU; same results
        llava = unwrap_llava(self.model)
        if cfg.gradient_checkpointing:
            enable_checkpointing(llava)
            llava.enable_input_require_grads()
        llava.config.text_config.use_cache = False
        self.module = LmmTrainingModule(self.model)
        self.health = ImageTokenProbe(self.model)
        self.step_flops = lmm_train_flops(llava, image_seq_length(self.processor) + 1)  # + the CLS it drops

    def build_data(self) -> None:
        from ..data.bad_records import BadRecordPolicy

        cfg, image_processor = self.cfg, self.processor.image_processor
        image_size = (image_processor.crop_size["height"] if getattr(image_processor, "crop_size", None)
                      else image_processor.size["height"])
        policy = BadRecordPolicy(cfg.on_bad_record)
        self.report = DataReport(policy.report, extra=lambda: (self.dataset.skipped, self.dataset.truncated)
                                 if self.dataset is not None else ({}, {}))
        with reading(cfg.data_path):
            reader = LlavaJsonDataset(LlavaJsonConfig(data_path=cfg.data_path, image_root=cfg.image_root or None,
                                                  image_size=image_size, on_bad_record=cfg.on_bad_record,
                                                  allow_paths_outside_root=cfg.allow_paths_outside_root), policy)
        self.report.mark_loaded()
        self.dataset = LmmSupervisedDataset(reader, self.processor, self.template, cfg.model_max_length)
        lengths = self.dataset.modality_lengths if cfg.group_by_modality_length else self.dataset.lengths
        self.sampler = GroupedBatchSampler(lengths, cfg.micro_batch_size, self.world, self.rank, cfg.seed,
                                           group_by_modality=cfg.group_by_modality_length, drop_last=True)
        self.collator = LmmCollator(self.processor.tokenizer.pad_token_id, "right")
        if cfg.projector_init == "match_text" and cfg.stage == "align" and not self.resuming:
            self.init_projector()

    def init_projector(self) -> None:
        """`match_text` on the first image samples in file order (the same batch on every rank: same weights)."""
        from ..lmm.projector_init import match_text_init
        from .lmm_config import CALIBRATION_SAMPLES

        picked = []
        for index in range(len(self.dataset)):
            item = self.dataset[index]
            if bool(item["image_mask"].any()):
                picked.append(item)
            if len(picked) == CALIBRATION_SAMPLES:
                break
        if not picked:
            raise InputError(f"{self.cfg.data_path}: projector_init=match_text needs samples with images")
        found = match_text_init(self.model, self.collator(picked))
        self.init_note = (f"projector_init match_text on {len(picked)} samples: image/text RMS ratio "
                          f"{found['ratio_before']:.2f} -> {found['ratio_after']:.2f}, cosine to the mean image "
                          f"token {found['cosine_before']:.3f} -> {found['cosine_after']:.3f}")

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def micro_batches_per_epoch(self) -> int:
        return len(self.sampler)

    def batches(self):
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collator,
                          num_workers=self.cfg.num_workers)

    def param_groups(self) -> list[dict]:
        return param_groups(self.module, self.cfg)

    def lr_factor(self, total_steps: int):
        return warmup_cosine(math.ceil(self.cfg.warmup_ratio * total_steps), total_steps, 0.0)

    def forward(self, engine, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": engine(**batch).loss}

    def count(self, batch: dict) -> dict[str, float]:
        mask = batch["attention_mask"]
        return {"samples": batch["input_ids"].shape[0], "tokens": int(mask.sum()), "positions": mask.numel(),
                "flops": self.step_flops(mask.numel(), batch["pixel_values"].shape[0])}

    def log_metrics(self, batch: dict, terms: dict[str, torch.Tensor], interval: dict[str, float], elapsed: float
                    ) -> dict[str, float]:
        health = self.health.metrics(batch.get("attention_mask"), batch.get("image_mask"))
        warning = self.health.warning(health)
        if warning:
            self.write(f"{self.command}: {warning}")
        return {"tokens_per_s": interval["tokens"] * self.world / elapsed,
                "padding_efficiency": interval["tokens"] / max(1, interval["positions"]), **health}

    def describe(self) -> str:
        note = f", {self.init_note}" if self.init_note else ""
        return f"template={self.template}, trainable={trainable_summary(self.model)}{note}"

    def export(self, engine, out: Path) -> Path:
        """OUT/hf: a stock LLaVA checkpoint (LoRA merged); OUT/adapter for LoRA; OUT/mm_projector for align."""
        cfg, model = self.cfg, self.model
        state = None
        if cfg.zero_stage == 3:
            gathered = restore_scalar_shapes(engine._zero3_consolidated_16bit_state_dict(), engine.module)
            state = {k.removeprefix("model."): v.float() for k, v in gathered.items()}
        final = out / "hf"
        if self.rank == 0:
            meta = {**self.meta, "trained": {"stage": cfg.stage, "template": self.template, "llm": cfg.llm_mode,
                                             "tower": cfg.tower_tuning}}
            if cfg.stage == "finetune":
                meta["template"] = self.template
            staging = ckpt.staging_dir(final)
            shutil.rmtree(staging, ignore_errors=True)
            if "lora" in (cfg.llm_mode, cfg.tower_tuning):
                save_lora(model, self.processor, out / "adapter", meta)
                save_full(merge_peft(model), self.processor, staging, meta)
            else:
                save_full(model, self.processor, staging, meta, state_dict=state)
            if cfg.stage == "align":
                save_projector(model, out / "mm_projector.safetensors")
            ckpt.publish(staging, final, {"stage": cfg.stage})
        torch.distributed.barrier()
        return final
