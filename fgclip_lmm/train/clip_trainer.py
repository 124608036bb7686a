"""FG-CLIP training on the DeepSpeed engine: stage 1 (global long/short) and stage 2 (+ regional, hard negatives).
`model: fgclip2` trains FG-CLIP 2 (SigLIP 2 NaFlex towers) on the same readers; its differences live in
`clip_fgclip2.py`.

Clusters: `deepspeed [--num_gpus N | --hostfile H] train_clip/train.py --config CFG [--key value ...]`.
One process: `fgclip-lmm train-clip --config CFG [--key value ...]` (same engine, gloo on a CPU).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import signal
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..model import FGCLIP2Model, FGCLIPConfig, FGCLIPModel
from . import checkpoint as ckpt
from .clip_config import ClipTrainConfig
from .clip_data import build_clip_data
from .clip_fgclip2 import build_fgclip2_model, fgclip2_batch_flops, fgclip2_hard_negative_accuracy
from .config_io import dump_config
from .flops import clip_tower_flops, measure_matmul_peak, train_flops
from .metrics_log import MetricsLogger
from .runtime import (deepspeed_config, device, fault_injection_step, init_distributed, restore_scalar_shapes,
                      run_trainer, use_bf16)

PRESETS = "clip"  # kind of shipped presets (fgclip_lmm/presets/clip/)
NO_DECAY = re.compile(r"(layer_?norm|layrnorm|\.bias$|^logit_scale|^logit_bias)", re.IGNORECASE)


def build_model(cfg: ClipTrainConfig, tokenizer, resuming: bool) -> FGCLIPModel | FGCLIP2Model:
    if cfg.model == "fgclip2":
        model = build_fgclip2_model(cfg, tokenizer, resuming)
    else:
        model = build_fgclip_model(cfg, tokenizer, resuming)
    for name, p in model.named_parameters():
        if any(re.search(pattern, name) for pattern in cfg.freeze):
            p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def build_fgclip_model(cfg: ClipTrainConfig, tokenizer, resuming: bool) -> FGCLIPModel:
    if cfg.init_from == "tiny":
        vocab = len(tokenizer)
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        config = FGCLIPConfig.tiny(vocab_size=vocab, image_size=cfg.image_size, patch_size=cfg.tiny_patch,
                                   width=cfg.tiny_width, layers=cfg.tiny_layers, logit_scale_max=cfg.logit_scale_max)
        for k, v in ids.items():
            setattr(config.text_config, k, v)
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


def param_groups(model: torch.nn.Module, cfg: ClipTrainConfig) -> list[dict]:
    """Official groups: no decay on norms, biases (and temperatures); an optional separate lr for the text tower."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (not NO_DECAY.search(name), cfg.text_lr is not None and name.startswith("text_model."))
            groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
             "lr": cfg.text_lr if text else cfg.lr} for (decay, text), ps in sorted(groups.items())]


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def batch_flops(model_config, batch: dict) -> float:
    if model_config.model_type == "fgclip2":
        return train_flops(fgclip2_batch_flops(model_config, batch))
    texts = [tuple(batch[k].shape) for k in ("long_input_ids", "short_input_ids", "box_input_ids",
                                              "hard_input_ids") if k in batch]
    return train_flops(clip_tower_flops(model_config, batch["pixel_values"].shape[0], texts))


def train(cfg: ClipTrainConfig) -> Path:
    import deepspeed

    rank, world, _ = init_distributed()
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.clean_stale(ckpt_root)
        dump_config(cfg, out / "config.yaml")
    resume_from = ckpt.resolve_resume(cfg.resume, ckpt_root)
    torch.manual_seed(cfg.seed + rank)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.init_from)
    model = build_model(cfg, tokenizer, resuming=resume_from is not None)
    data = build_clip_data(cfg, tokenizer, model.config, rank, world)
    per_step = cfg.micro_batch_size * cfg.grad_accum
    steps_per_epoch = data.sampler.num_samples // per_step
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data.dataset)} samples over {world} rank(s) give no full step of {per_step}")
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, total, cfg.min_lr_ratio))
    bf16 = use_bf16(cfg.precision)
    ds_config = deepspeed_config(cfg.deepspeed_config, cfg.zero_stage, cfg.micro_batch_size, cfg.grad_accum,
                                 cfg.grad_clip, bf16)
    if cfg.zero_stage == 3:
        ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops > 0 else measure_matmul_peak()
    step = 0
    if resume_from is not None:
        step = ckpt.resume_engine(engine, resume_from, data.sampler, rank)
    logger = MetricsLogger(out, total, step, rank == 0, desc=f"train-clip {cfg.stage}")
    logger.write(f"rank {rank}/{world}: {len(data.dataset)} samples, {total} steps, bf16={bf16}, "
                 f"resume={resume_from}, peak {peak / 1e12:.3g} TFLOP/s")
    kill_at = fault_injection_step()
    dtype = torch.bfloat16 if bf16 else torch.float32
    dev, model_config = device(), engine.module.config
    consumed = data.sampler.position
    tick, interval_samples, interval_flops = time.perf_counter(), 0, 0.0
    while step < total:
        for batch in data.loader(cfg.micro_batch_size, cfg.num_workers):
            batch = {k: v.to(dev) for k, v in batch.items()}
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
            terms = engine(**batch)
            check_finite(terms, step + 1)
            engine.backward(terms["loss"])
            engine.step()
            consumed += cfg.micro_batch_size
            interval_samples += cfg.micro_batch_size * world
            interval_flops += batch_flops(model_config, batch)
            if not engine.is_gradient_accumulation_boundary():
                continue
            step += 1
            logger.step()
            if step % cfg.log_every == 0 or step == total:
                elapsed = time.perf_counter() - tick
                record = {k: float(v.detach()) for k, v in terms.items()}
                record.update(lr=scheduler.get_last_lr()[0], samples_per_s=interval_samples / elapsed,
                              mfu=interval_flops / elapsed / peak)
                logger.log(step, record, show=("loss", "hard_neg", "samples_per_s", "mfu"))
                tick, interval_samples, interval_flops = time.perf_counter(), 0, 0.0
            if cfg.eval_every and cfg.eval_data and step % cfg.eval_every == 0:
                logger.log(step, periodic_eval(engine.module, tokenizer, cfg, rank))
            if step % cfg.save_every == 0 or step == total:
                save_checkpoint(engine, tokenizer, cfg, ckpt_root, step, data.sampler.state_dict(consumed), rank)
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step >= total:
                break
        else:
            consumed = 0  # the epoch ran out: the sampler moved on to the next one
    checksum = sum(float(p.detach().double().sum()) for p in engine.module.parameters())
    print(f"FGCLIP_PARAM_CHECKSUM rank={rank} {checksum:.10e}", flush=True)  # ranks must agree (tests, debugging)
    final = export_final(ckpt_root, out, rank)
    if data.policy.report.total_skipped or data.policy.report.truncated:
        logger.write(data.policy.report.summary())
    logger.close()
    return final


def check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    """Stop on NaN/inf naming the step and the term; all ranks agree so none waits in a collective."""
    names = [k for k in terms if not k.startswith("temperature/")]
    bad = torch.stack([~torch.isfinite(terms[k].detach().float()) for k in names]).float()
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if bad.any():
        raise FloatingPointError(f"step {step}: loss term(s) {[n for n, b in zip(names, bad) if b]} became "
                                 f"non-finite ({ {n: float(terms[n]) for n in names} })")


def save_checkpoint(engine, tokenizer, cfg: ClipTrainConfig, root: Path, step: int, sampler_state: dict,
                    rank: int) -> None:
    def export_hf(staging: Path) -> None:
        state = engine._zero3_consolidated_16bit_state_dict() if cfg.zero_stage == 3 else None
        if rank == 0:
            module = engine.module
            state = restore_scalar_shapes(state, module) if state is not None else module.state_dict()
            module.save_pretrained(staging / "hf", state_dict={k: v.float() for k, v in state.items()})
            tokenizer.save_pretrained(staging / "hf")

    ckpt.save_engine_checkpoint(engine, root, step, sampler_state, rank, cfg.keep_checkpoints, export_hf)


def export_final(root: Path, out: Path, rank: int) -> Path:
    """Copy the last checkpoint's HF export to OUT/hf atomically (a `FGCLIPModel.from_pretrained` directory)."""
    final = out / "hf"
    if rank == 0:
        staging = ckpt.staging_dir(final)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(ckpt.latest_complete(root) / "hf", staging)
        ckpt.publish(staging, final, {"source": str(ckpt.latest_complete(root))})
    torch.distributed.barrier()
    return final


def periodic_eval(model: FGCLIPModel | FGCLIP2Model, tokenizer, cfg: ClipTrainConfig, rank: int) -> dict[str, float]:
    from .clip_eval import hard_negative_accuracy

    was_training = model.training
    model.eval()
    with torch.no_grad():
        if cfg.model == "fgclip2":
            result = fgclip2_hard_negative_accuracy(model, tokenizer, cfg, limit=cfg.eval_limit)
        else:
            result = hard_negative_accuracy(model, tokenizer, cfg.eval_data, cfg.eval_image_root or None,
                                            image_size=cfg.image_size, limit=cfg.eval_limit)
    model.train(was_training)
    return {f"eval/{k}": float(v) for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
    return run_trainer(ClipTrainConfig, argv, PRESETS, train)
