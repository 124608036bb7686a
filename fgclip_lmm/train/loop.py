"""The one training loop of `train-clip` and `train-lmm`, on the DeepSpeed engine.

`run_training(task)` does, identically for both trainers (a `task.TrainTask` supplies model, data and forward):
process group, config dump and stale staging cleanup (the command already holds the output dir's lock), resume,
AdamW + warmup/cosine inside the engine, gradient accumulation, a non-finite check on every micro-batch, one
`metrics.jsonl` row per logged or evaluated step (the task's `log_metrics` adds its own keys), validation results as
lines above the progress bar, atomic checkpoints, the final export, the data report (also when the run fails) and
an end-of-run summary. It returns a `TrainResult`.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import report as data_report
from .command import MARKERS_ENV, env_flag, marker
from .config_io import dump_config
from .flops import measure_matmul_peak
from .metrics_log import MetricsLogger
from .runtime import deepspeed_config, device, init_distributed, use_bf16
from .task import TrainDataError, TrainTask

FAULT_ENV = "FGCLIP_FAULT_KILL_AT_STEP"


@dataclass
class TrainResult:
    """What a finished run produced (the same for both trainers)."""

    model_dir: Path                 # OUT/hf: the final model, loadable with from_pretrained
    output_dir: Path
    metrics: Path                   # OUT/metrics.jsonl (TensorBoard events in OUT/tensorboard)
    report: Path                    # OUT/bad_records.json
    steps: int
    resumed_from: Path | None
    final: dict[str, float] = field(default_factory=dict)  # the last logged row
    best_eval: dict[str, float] | None = None  # {"step": s, metric: value} of the best periodic evaluation
    data: dict = field(default_factory=dict)  # the data report


def fault_injection_step() -> int:
    """FGCLIP_FAULT_KILL_AT_STEP=N makes a trainer SIGKILL itself after step N (resume tests); 0 = off."""
    return int(os.environ.get(FAULT_ENV, "0"))


def check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    """Stop on NaN/inf naming the step and the term; all ranks agree so none waits in a collective."""
    names = [k for k in terms if not k.startswith("temperature/")]
    bad = torch.stack([~torch.isfinite(terms[k].detach().float()) for k in names]).float()
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if bad.any():
        failed = [n for n, b in zip(names, bad, strict=True) if b]
        raise FloatingPointError(f"step {step}: loss term(s) {failed} became non-finite "
                                 f"({ {n: float(terms[n]) for n in names} })")


def planned_steps(task: TrainTask) -> int:
    cfg = task.cfg
    per_epoch = task.micro_batches_per_epoch() // cfg.grad_accum
    if per_epoch == 0:
        raise TrainDataError(f"{task.num_samples} usable samples over {task.world} rank(s) give no full optimizer "
                             f"step of {cfg.micro_batch_size} x {cfg.grad_accum} per rank; lower micro_batch_size "
                             "or grad_accum, or add data")
    return cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * per_epoch))


def make_engine(task: TrainTask, total: int, bf16: bool):
    import deepspeed

    cfg = task.cfg
    optimizer = torch.optim.AdamW(task.param_groups(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, task.lr_factor(total))
    ds_config = deepspeed_config(cfg.deepspeed_config, cfg.zero_stage, cfg.micro_batch_size, cfg.grad_accum,
                                 cfg.grad_clip, bf16)
    if cfg.zero_stage == 3:
        ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    engine, _, _, _ = deepspeed.initialize(model=task.module, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    return engine, scheduler


def run_training(task: TrainTask) -> TrainResult:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" bars would break ours
    cfg = task.cfg
    task.rank, task.world, _ = init_distributed()
    rank = task.rank
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if rank == 0:
        ckpt.clean_stale(ckpt_root)  # safe: this run holds the output dir's lock
        dump_config(cfg, out / "config.yaml")
    resume_from = ckpt.resolve_resume(cfg.resume, ckpt_root)
    torch.manual_seed(cfg.seed + rank)
    task.build_model(resuming=resume_from is not None)
    logger = None
    try:
        task.build_data()
        total = planned_steps(task)
        bf16 = use_bf16(cfg.precision)
        engine, scheduler = make_engine(task, total, bf16)
        peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops > 0 else measure_matmul_peak()
        step = ckpt.resume_engine(engine, resume_from, task.sampler, rank) if resume_from is not None else 0
        logger = MetricsLogger(out, total, step, rank == 0, desc=task.title)
        task.write = logger.write
        extra = task.describe()
        logger.write(f"{task.title}: {task.num_samples} samples on {task.world} rank(s), {total} steps of "
                     f"{cfg.micro_batch_size} x {cfg.grad_accum} per rank, bf16={bf16}, peak "
                     f"{peak / 1e12:.3g} TFLOP/s" + (f", {extra}" if extra else ""))
        if resume_from is not None:
            logger.write(f"resumed from {resume_from} (step {step})")
        if logger.dropped:
            logger.write(f"{logger.path}: dropped {logger.dropped} row(s) past step {step} left by the earlier run")
        progress = train_steps(task, engine, scheduler, logger, step, total, bf16, peak)
        if env_flag(MARKERS_ENV):  # ranks must agree (tests of the multi-process runs)
            checksum = sum(float(p.detach().double().sum()) for p in engine.module.parameters())
            marker(f"FGCLIP_PARAM_CHECKSUM rank={rank} {checksum:.10e}")
        model_dir = task.export(engine, out)
    except Exception:
        if logger is not None:
            logger.close()
        emit_report(task, out, all_ranks=False, console=lambda text: print(text, file=sys.stderr, flush=True))
        raise
    logger.close()
    data = emit_report(task, out, all_ranks=True, console=print)
    result = TrainResult(model_dir, out, logger.path, out / data_report.REPORT_NAME, total, resume_from,
                         progress.last, progress.best, data)
    if rank == 0:
        print(run_summary(task, result, progress), flush=True)
    return result


def emit_report(task: TrainTask, out: Path, all_ranks: bool, console) -> dict:
    """Collect the data report (summed over ranks at a normal end), print it and write it (rank 0)."""
    if task.report is None:
        return {}
    report = task.report.collect(task.world, all_ranks)
    if task.rank == 0:
        path = out / data_report.REPORT_NAME
        data_report.write(report, path)
        console(data_report.summary(report, path))
    return report


@dataclass
class Progress:
    last: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] | None = None
    loss_keys: list[str] = field(default_factory=list)  # the forward's loss terms (temperatures left out)
    seconds: float = 0.0


def train_steps(task: TrainTask, engine, scheduler, logger: MetricsLogger, step: int, total: int, bf16: bool,
                peak: float) -> Progress:
    cfg, progress, start = task.cfg, Progress(), time.perf_counter()
    dev, dtype = device(), (torch.bfloat16 if bf16 else torch.float32)
    ckpt_root, kill_at = Path(cfg.output_dir) / "checkpoints", fault_injection_step()
    consumed = task.sampler.position
    interval, tick = Counter(), time.perf_counter()
    while step < total:
        for batch in task.batches():
            batch = {k: v.to(dev) for k, v in batch.items()}
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
            terms = task.forward(engine, batch)
            check_finite(terms, step + 1)
            engine.backward(terms["loss"])
            engine.step()
            consumed += task.units_per_micro_batch
            interval.update(task.count(batch))
            if not engine.is_gradient_accumulation_boundary():
                continue
            step += 1
            row: dict[str, float] = {}
            if step % cfg.log_every == 0 or step == total:
                elapsed = time.perf_counter() - tick
                row = {k: float(v.detach()) for k, v in terms.items()}
                row.update(lr=scheduler.get_last_lr()[0], samples_per_s=interval["samples"] * task.world / elapsed,
                           mfu=interval["flops"] / elapsed / peak)
                row.update(task.log_metrics(batch, terms, interval, elapsed))  # the task's per-log-step hook
                progress.last = dict(row)
                progress.loss_keys = sorted((k for k in terms if not k.startswith("temperature/")),
                                            key=lambda k: k != "loss")
                interval, tick = Counter(), time.perf_counter()
            paused = time.perf_counter()  # evaluation and saving do not count against throughput
            evaluation = task.evaluate(step)
            if evaluation:
                row.update(evaluation)
                logger.write(f"step {step} eval: " + ", ".join(f"{k.removeprefix('eval/')} {v:.4g}"
                                                             for k, v in evaluation.items()))
                key = task.eval_metric
                if key in evaluation and (progress.best is None or evaluation[key] > progress.best[key]):
                    progress.best = {"step": step, key: evaluation[key]}
            if row:
                logger.log(step, row, show=task.show)
            logger.step()  # after the row, so the bar shows this step's numbers
            if step % cfg.save_every == 0 or step == total:
                ckpt.save_engine_checkpoint(engine, ckpt_root, step, task.sampler.state_dict(consumed), task.rank,
                                            cfg.keep_checkpoints, lambda staging: task.checkpoint_export(engine,
                                                                                                       staging))
            tick += time.perf_counter() - paused
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step >= total:
                break
        else:
            consumed = 0  # the epoch ran out: the sampler moved on to the next one
    progress.seconds = time.perf_counter() - start
    return progress


def run_summary(task: TrainTask, result: TrainResult, progress: Progress) -> str:
    final = ", ".join(f"{k} {result.final[k]:.4g}" for k in progress.loss_keys if k in result.final)
    lines = [f"{task.title} finished: step {result.steps} ({progress.seconds:.1f} s of training in this process)",
             f"  final {final}" if final else "  final: no step left to run (the checkpoint was already complete)"]
    if result.best_eval:
        key = task.eval_metric
        lines.append(f"  best {key}: {result.best_eval[key]:.4g} at step {int(result.best_eval['step'])}")
    lines += [f"  model:   {result.model_dir}",
              f"  metrics: {result.metrics} (TensorBoard: {result.output_dir / 'tensorboard'})",
              f"  data report: {result.report}"]
    return "\n".join(lines)
