"""`LmmTrainConfig`: the LLaVA-style instruction-tuning knobs in one typed, flat dataclass (presets in train_lmm/)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..presets import PresetError, resolve_deepspeed_json
from .config_io import ConfigError

STAGES = ("align", "finetune")
TUNINGS = ("frozen", "full", "lora")


@dataclass
class LmmTrainConfig:
    stage: str = "finetune"             # align: projector only, plain template; finetune: LLM full or LoRA
    model: str = ""                     # an assembled LMM dir (`fgclip-lmm assemble`) or the previous stage's hf/
    template: str = "auto"              # auto: plain for align, the assembled template for finetune
    llm_tuning: str = "full"            # finetune: full | lora (align forces frozen)
    tower_tuning: str = "frozen"        # frozen | full | lora
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    data_path: str = ""                 # LLaVA JSON (file, .txt list or directory)
    image_root: str = ""
    on_bad_record: str = "skip"
    model_max_length: int = 2048
    group_by_modality_length: bool = True
    num_workers: int = 4
    micro_batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = -1
    epochs: float = 1.0
    lr: float = 2e-5
    projector_lr: float | None = None   # LoRA recipe: 2e-5 for the projector while the adapters use 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    grad_clip: float = 1.0
    gradient_checkpointing: bool = True
    precision: str = "auto"
    zero_stage: int = 3
    deepspeed_config: str | None = None
    seed: int = 42
    output_dir: str = "runs/lmm"
    resume: str = ""
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    peak_tflops: float = 0.0

    def validate(self) -> None:
        if self.deepspeed_config:
            try:
                resolve_deepspeed_json(self.deepspeed_config)
            except PresetError as error:
                raise ConfigError(f"config key 'deepspeed_config': {error}") from None
        if self.stage not in STAGES:
            raise ConfigError(f"config key 'stage': {self.stage!r} is not one of {STAGES}")
        for key in ("llm_tuning", "tower_tuning"):
            if getattr(self, key) not in TUNINGS:
                raise ConfigError(f"config key {key!r}: {getattr(self, key)!r} is not one of {TUNINGS}")
        for key in ("model", "data_path"):
            if not getattr(self, key):
                raise ConfigError(f"config key {key!r} is required")
            if not Path(getattr(self, key)).exists():
                raise ConfigError(f"config key {key!r}: {getattr(self, key)} does not exist")
        if self.zero_stage == 3 and "lora" in (self.llm_tuning, self.tower_tuning):
            raise ConfigError("config key 'zero_stage': LoRA runs use ZeRO-2 here (QLoRA/LoRA recipes use zero2)")

    @property
    def llm_mode(self) -> str:
        return "frozen" if self.stage == "align" else self.llm_tuning
