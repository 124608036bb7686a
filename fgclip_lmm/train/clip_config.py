"""`ClipTrainConfig`: every knob of FG-CLIP (v1 and FG-CLIP 2) training in one typed, flat dataclass (YAML presets in
fgclip_lmm/presets/clip/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..presets import PresetError, resolve_deepspeed_json
from .config_io import ConfigError

STAGES = ("stage1", "stage2")
MODELS = ("fgclip", "fgclip2")


@dataclass
class ClipTrainConfig:
    # what to train
    model: str = "fgclip"                 # fgclip (v1, CLIP towers) | fgclip2 (FG-CLIP 2, SigLIP 2 NaFlex towers)
    stage: str = "stage2"                 # stage1: global long/short; stage2: + regional + hard negatives
    init_from: str = "openai/clip-vit-base-patch16"  # OpenAI CLIP, official FG-CLIP, ours, or "tiny" (random);
    #                                     fgclip2: SigLIP 2 NaFlex, official FG-CLIP 2, ours, or "tiny"
    tokenizer: str | None = None          # default: the init_from checkpoint's tokenizer
    reset_fine_grained_scales: bool = True  # official: region/hard temperatures start at logit_scale (fresh runs;
    #                                       fgclip2: at fine_grained_logit_scale_init = 4.6052, its official start)
    logit_scale_max: float | None = None  # clamp of the three log-temperatures; None = official (no clamp)
    freeze: list[str] = field(default_factory=list)  # regexes of parameter names to freeze
    gradient_checkpointing: bool = True   # non-reentrant, as the official trainer forces
    tiny_width: int = 64                  # init_from: tiny -> FGCLIPConfig.tiny(width, layers, patch)
    tiny_layers: int = 2
    tiny_patch: int = 8
    patch_budgets: list[int] = field(default_factory=lambda: [128, 256, 576, 784, 1024])  # fgclip2: NaFlex budgets
    # data
    data_path: str = ""                   # stage1 pairs or FineHARD (file, .txt list or directory)
    data_format: str = "auto"             # auto (stage1: pairs, stage2: finehard) | pairs | finehard
    image_root: str = ""
    strip_prefixes: list[str] = field(default_factory=lambda: ["grit-20m/data-12m/"])
    image_size: int = 224
    max_boxes: int = 4
    short_prefix: str = "a photo of "
    on_bad_record: str = "skip"           # error | skip
    truncation: str = "truncate"          # error | truncate
    num_workers: int = 4
    eval_data: str = ""                   # FineHARD-format split (synthetic val) for periodic hard-negative accuracy
    eval_image_root: str = ""
    eval_every: int = 0
    eval_limit: int = 512
    # optimisation
    micro_batch_size: int = 512
    grad_accum: int = 1
    max_steps: int = -1                   # -1: one pass over `epochs`
    epochs: float = 1.0
    lr: float = 1e-6
    text_lr: float | None = None          # optional separate lr for text_model.* (official `text_model_lr`)
    weight_decay: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 200
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    precision: str = "auto"               # auto (bf16 where supported) | bf16 | fp32
    zero_stage: int = 2
    deepspeed_config: str | None = None   # JSON file; our values fill batch size, accumulation, clipping, bf16
    seed: int = 42
    # output
    output_dir: str = "runs/clip"
    resume: str = ""                      # "" | auto | path to a checkpoint dir
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    peak_tflops: float = 0.0              # per device, for MFU; 0 = 989 (H100 dense bf16) on GPU, skip on CPU

    def validate(self) -> None:
        if self.deepspeed_config:
            try:
                resolve_deepspeed_json(self.deepspeed_config)
            except PresetError as error:
                raise ConfigError(f"config key 'deepspeed_config': {error}") from None
        if self.model not in MODELS:
            raise ConfigError(f"config key 'model': {self.model!r} is not one of {MODELS}")
        if self.model == "fgclip2" and self.logit_scale_max is not None:
            raise ConfigError("config key 'logit_scale_max': FG-CLIP 2 trains its temperatures unclamped, as the "
                              "official trainer does; leave it unset (null) for model: fgclip2")
        if not self.patch_budgets or any(b <= 0 for b in self.patch_budgets):
            raise ConfigError(f"config key 'patch_budgets': expected positive patch counts, got {self.patch_budgets}")
        if self.stage not in STAGES:
            raise ConfigError(f"config key 'stage': {self.stage!r} is not one of {STAGES}")
        if self.on_bad_record not in {"error", "skip"}:
            raise ConfigError(f"config key 'on_bad_record': {self.on_bad_record!r} is not error|skip")
        if self.truncation not in {"error", "truncate"}:
            raise ConfigError(f"config key 'truncation': {self.truncation!r} is not error|truncate")
        if not self.data_path:
            raise ConfigError("config key 'data_path' is required")
        if not Path(self.data_path).exists():
            raise ConfigError(f"config key 'data_path': {self.data_path} does not exist")
        if self.eval_data and not Path(self.eval_data).exists():
            raise ConfigError(f"config key 'eval_data': {self.eval_data} does not exist")
        if self.data_format not in {"auto", "pairs", "finehard"}:
            raise ConfigError(f"config key 'data_format': {self.data_format!r} is not auto|pairs|finehard")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"config key 'zero_stage': {self.zero_stage} is not 0-3")
        if len(self.betas) != 2:
            raise ConfigError(f"config key 'betas': expected two values, got {self.betas}")

    @property
    def regional(self) -> bool:
        return self.stage == "stage2"

    @property
    def reader(self) -> str:
        if self.data_format != "auto":
            return self.data_format
        return "finehard" if self.regional else "pairs"
