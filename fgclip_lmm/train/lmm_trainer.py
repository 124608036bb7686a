"""LLaVA-style instruction tuning on the DeepSpeed engine: stage `align` (projector only) and `finetune`.

Clusters: `deepspeed [--num_gpus N | --hostfile H] train_lmm/train.py --config CFG [--key value ...]`.
One process: `fgclip-lmm train-lmm --config CFG [--key value ...]`.
Outputs: OUT/hf (a stock HF LLaVA checkpoint), OUT/adapter (LoRA runs: adapter + non-LoRA trainables),
OUT/mm_projector.safetensors (align), OUT/checkpoints/step_* (DeepSpeed state for `--resume auto`).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoProcessor, LlavaForConditionalGeneration

from ..data.llava_json import LlavaConfig, LlavaJsonDataset
from ..lmm.assemble import read_meta
from ..lmm.dataset import LmmCollator, LmmSupervisedDataset, image_seq_length
from ..lmm.export import merge_peft, save_full, save_lora, save_projector
from ..lmm.forward import lmm_forward
from ..lmm.grouping import GroupedBatchSampler
from ..lmm.tuning import LmmTuning, apply_tuning, trainable_summary, unwrap_llava
from ..tower.base import LoraSpec
from ..tower.blocks import prepare_llava_tower
from . import checkpoint as ckpt
from .clip_trainer import check_finite, warmup_cosine
from .config_io import dump_config
from .flops import lmm_train_flops, measure_matmul_peak
from .lmm_config import LmmTrainConfig
from .metrics_log import MetricsLogger
from .runtime import (deepspeed_config, device, fault_injection_step, init_distributed, restore_scalar_shapes,
                      run_trainer, use_bf16)

PRESETS = "lmm"  # kind of shipped presets (fgclip_lmm/presets/lmm/)


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


def build(cfg: LmmTrainConfig, rank: int, world: int):
    meta = read_meta(cfg.model)
    template = cfg.template if cfg.template != "auto" else ("plain" if cfg.stage == "align" else meta["template"])
    processor = AutoProcessor.from_pretrained(cfg.model)
    # ZeRO-3-safe: the full model is loaded on every rank before the engine partitions it (no partial loads).
    model = LlavaForConditionalGeneration.from_pretrained(cfg.model, dtype=torch.float32)
    tuning = LmmTuning(llm=cfg.llm_mode, tower=cfg.tower_tuning, projector="full",
                       lora=LoraSpec(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
    trainable = apply_tuning(model, tuning)
    prepare_llava_tower(model)  # skip the tower blocks after vision_feature_layer, fused QuickGELU; same results
    if cfg.gradient_checkpointing:
        unwrap_llava(trainable).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        unwrap_llava(trainable).enable_input_require_grads()
    unwrap_llava(trainable).config.text_config.use_cache = False
    image_size = processor.image_processor.crop_size["height"] if getattr(
        processor.image_processor, "crop_size", None) else processor.image_processor.size["height"]
    reader = LlavaJsonDataset(LlavaConfig(data_path=cfg.data_path, image_root=cfg.image_root or None,
                                          image_size=image_size, on_bad_record=cfg.on_bad_record))
    dataset = LmmSupervisedDataset(reader, processor, template, cfg.model_max_length)
    lengths = dataset.modality_lengths if cfg.group_by_modality_length else dataset.lengths
    sampler = GroupedBatchSampler(lengths, cfg.micro_batch_size, world, rank, cfg.seed,
                                  group_by_modality=cfg.group_by_modality_length, drop_last=True)
    collator = LmmCollator(processor.tokenizer.pad_token_id, "right")
    return meta, template, processor, trainable, tuning, dataset, sampler, collator


def train(cfg: LmmTrainConfig) -> Path:
    import deepspeed

    rank, world, _ = init_distributed()
    out, ckpt_root = Path(cfg.output_dir), Path(cfg.output_dir) / "checkpoints"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.clean_stale(ckpt_root)
        dump_config(cfg, out / "config.yaml")
    resume_from = ckpt.resolve_resume(cfg.resume, ckpt_root)
    torch.manual_seed(cfg.seed)
    meta, template, processor, model, tuning, dataset, sampler, collator = build(cfg, rank, world)
    steps_per_epoch = len(sampler) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} samples over {world} rank(s) give no full step")
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * steps_per_epoch))
    wrapper = LmmTrainingModule(model)
    optimizer = torch.optim.AdamW(param_groups(wrapper, cfg), lr=cfg.lr)
    warmup = math.ceil(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total, 0.0))
    bf16 = use_bf16(cfg.precision)
    ds_config = deepspeed_config(cfg.deepspeed_config, cfg.zero_stage, cfg.micro_batch_size, cfg.grad_accum,
                                 cfg.grad_clip, bf16)
    if cfg.zero_stage == 3:
        ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    engine, _, _, _ = deepspeed.initialize(model=wrapper, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops > 0 else measure_matmul_peak()
    step = 0
    if resume_from is not None:
        step = ckpt.resume_engine(engine, resume_from, sampler, rank)
    logger = MetricsLogger(out, total, step, rank == 0, desc=f"train-lmm {cfg.stage}")
    logger.write(f"rank {rank}/{world}: {len(dataset)} samples, {total} steps, template={template}, "
                 f"trainable={trainable_summary(model)}")
    step_flops = lmm_train_flops(unwrap_llava(model), image_seq_length(processor) + 1)  # + the CLS it drops
    dev, dtype = device(), (torch.bfloat16 if bf16 else torch.float32)
    consumed, kill_at = sampler.position, fault_injection_step()
    tick, tokens, computed, samples, flops = time.perf_counter(), 0, 0, 0, 0.0
    while step < total:
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=cfg.num_workers)
        for batch in loader:
            batch = {k: v.to(dev) for k, v in batch.items()}
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
            loss = engine(**batch).loss
            check_finite({"loss": loss}, step + 1)
            engine.backward(loss)
            engine.step()
            consumed += 1
            tokens += int(batch["attention_mask"].sum())
            computed += batch["attention_mask"].numel()
            samples += batch["input_ids"].shape[0]
            flops += step_flops(batch["attention_mask"].numel(), batch["pixel_values"].shape[0])
            if not engine.is_gradient_accumulation_boundary():
                continue
            step += 1
            logger.step()
            if step % cfg.log_every == 0 or step == total:
                elapsed = time.perf_counter() - tick
                logger.log(step, {"loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                                  "tokens_per_s": tokens * world / elapsed, "samples_per_s": samples * world / elapsed,
                                  "padding_efficiency": tokens / max(1, computed),
                                  "mfu": flops / elapsed / peak},
                           show=("loss", "tokens_per_s", "mfu"))
                tick, tokens, computed, samples, flops = time.perf_counter(), 0, 0, 0, 0.0
            if step % cfg.save_every == 0 or step == total:
                ckpt.save_engine_checkpoint(engine, ckpt_root, step, sampler.state_dict(consumed), rank,
                                            cfg.keep_checkpoints)
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step >= total:
                break
        else:
            consumed = 0
    final = export(engine, model, processor, meta, template, cfg, out, rank)
    if dataset.skipped and any(dataset.skipped.values()):
        logger.write(f"skipped samples: {dataset.skipped}")
    logger.close()
    return final


def export(engine, model, processor, meta: dict, template: str, cfg: LmmTrainConfig, out: Path, rank: int) -> Path:
    """OUT/hf: a stock LLaVA checkpoint (LoRA merged); OUT/adapter for LoRA; OUT/mm_projector for align."""
    state = None
    if cfg.zero_stage == 3:
        gathered = restore_scalar_shapes(engine._zero3_consolidated_16bit_state_dict(), engine.module)
        state = {k.removeprefix("model."): v.float() for k, v in gathered.items()}
    final = out / "hf"
    if rank == 0:
        meta = {**meta, "trained": {"stage": cfg.stage, "template": template, "llm": cfg.llm_mode,
                                    "tower": cfg.tower_tuning}}
        if cfg.stage == "finetune":
            meta["template"] = template
        staging = ckpt.staging_dir(final)
        shutil.rmtree(staging, ignore_errors=True)
        if "lora" in (cfg.llm_mode, cfg.tower_tuning):
            save_lora(model, processor, out / "adapter", meta)
            save_full(merge_peft(model), processor, staging, meta)
        else:
            save_full(model, processor, staging, meta, state_dict=state)
        if cfg.stage == "align":
            save_projector(model, out / "mm_projector.safetensors")
        ckpt.publish(staging, final, {"stage": cfg.stage})
    torch.distributed.barrier()
    return final


def main(argv: list[str] | None = None) -> int:
    return run_trainer(LmmTrainConfig, argv, PRESETS, train)
