"""`TrainConfig`: the keys both trainers share (data, optimisation, DeepSpeed, output), with their shared checks.

`ClipTrainConfig` and `LmmTrainConfig` extend it; a subclass re-declares a key only to give it another default.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..presets import PresetError, resolve_deepspeed_json
from .config_io import ConfigError, option

PRECISIONS = ("auto", "bf16", "fp32")
COMPLETE = "COMPLETE"  # the marker file of a finished checkpoint (checkpoint.py writes it)
BAD_RECORD_POLICIES = ("error", "skip")


@dataclass
class TrainConfig:
    # data
    data_path: str = option("", "training data: a file, a .txt list of files, or a directory")
    image_root: str = option("", "directory that relative image paths in the data are resolved against")
    allow_paths_outside_root: bool = option(False, "accept absolute / `..` image paths (else bad records "
                                            "path_outside_root)")
    on_bad_record: str = option("skip", "a record that cannot be used: stop with its file/record/field, or skip "
                                "and count it in the bad-record report", choices=BAD_RECORD_POLICIES)
    num_workers: int = option(4, "DataLoader worker processes per rank", min=0)
    # optimisation
    micro_batch_size: int = option(16, "samples per rank per forward pass", min=1)
    grad_accum: int = option(1, "micro-batches per optimizer step", min=1)
    max_steps: int = option(-1, "optimizer steps; -1 = `epochs` passes over the data", min=-1)
    epochs: float = option(1.0, "passes over the data when max_steps is -1", min=0.0)
    lr: float = option(2e-5, "peak learning rate (AdamW, warmup then cosine)", min=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay (norms and biases excluded)", min=0.0)
    betas: list[float] = option([0.9, 0.999], "AdamW betas", min=0.0, max=1.0)
    eps: float = option(1e-8, "AdamW epsilon", min=0.0)
    grad_clip: float = option(1.0, "global gradient-norm clip; 0 = off", min=0.0)
    gradient_checkpointing: bool = option(True, "recompute activations in backward (non-reentrant)")
    precision: str = option("auto", "auto = bf16 where the GPU supports it, else fp32", choices=PRECISIONS)
    zero_stage: int = option(2, "DeepSpeed ZeRO stage", choices=(0, 1, 2, 3))
    deepspeed_config: str | None = option(None, "DeepSpeed JSON (zero2, zero3 or a path); our keys fill its "
                                          "batch size, accumulation, clipping and precision")
    seed: int = option(42, "seed of model init, data order and dropout")
    # output
    output_dir: str = option("runs/train", "where the model (hf/), checkpoints, metrics.jsonl and logs go")
    resume: str = option("", "'' = fresh run; auto = newest complete checkpoint in output_dir; or a checkpoint dir")
    save_every: int = option(1000, "optimizer steps between checkpoints (the last step is always saved)", min=1)
    keep_checkpoints: int = option(2, "checkpoints kept in output_dir/checkpoints", min=1)
    log_every: int = option(10, "optimizer steps between metrics.jsonl rows", min=1)
    peak_tflops: float = option(0.0, "per-device peak for MFU; 0 = measure a matmul on this device", min=0.0)

    def validate(self) -> None:
        """Rules across keys and on the filesystem (types, choices and bounds are checked by the loader)."""
        if self.deepspeed_config:
            try:
                resolve_deepspeed_json(self.deepspeed_config)
            except PresetError as error:
                raise ConfigError(f"config key 'deepspeed_config': {error}") from None
        if not self.data_path:
            raise ConfigError("config key 'data_path' is required")
        if not Path(self.data_path).exists():
            raise ConfigError(f"config key 'data_path': {self.data_path} does not exist")
        if self.resume not in ("", "auto") and not (Path(self.resume) / COMPLETE).is_file():
            raise ConfigError(f"config key 'resume': {self.resume} is not a complete checkpoint (no {COMPLETE} "
                              "marker); use auto for the newest one in output_dir")
        if not self.output_dir:
            raise ConfigError("config key 'output_dir' is required")
        if len(self.betas) != 2:
            raise ConfigError(f"config key 'betas': expected two values, got {self.betas}")
