"""`ClipTrainConfig`: every knob of FG-CLIP (v1 and FG-CLIP 2) training in one typed, flat dataclass (presets in
fgclip_lmm/presets/clip/)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .common_config import TrainConfig
from .config_io import ConfigError, option

STAGES = ("stage1", "stage2")
# Architectures `train-clip` can build; `clip_task.MODEL_BUILDERS` holds one builder per name.
CLIP_MODELS = ("fgclip", "fgclip2")
PATCH_BUDGETS = [128, 256, 576, 784, 1024]  # FG-CLIP 2's official NaFlex budgets (`dynamic_max_patches`)


@dataclass
class ClipTrainConfig(TrainConfig):
    # what to train
    stage: str = option("stage2", "stage1: global long/short captions; stage2: + regional and hard negatives",
                        choices=STAGES)
    model: str = option("fgclip", "architecture to train: fgclip (CLIP towers) or fgclip2 (FG-CLIP 2, SigLIP 2 "
                        "NaFlex towers)", choices=CLIP_MODELS)
    init_from: str = option("openai/clip-vit-base-patch16", "OpenAI CLIP, official FG-CLIP or our checkpoint "
                            "(dir or hub id), or 'tiny' for a random tiny model; fgclip2: SigLIP 2 NaFlex, "
                            "official FG-CLIP 2 or ours")
    tokenizer: str | None = option(None, "tokenizer dir; default: the init_from checkpoint's")
    reset_fine_grained_scales: bool = option(True, "fresh runs start the region/hard temperatures at logit_scale "
                                             "(official; fgclip2: at 4.6052, its official start)")
    logit_scale_max: float | None = option(None, "clamp of the three log-temperatures; none = official (no clamp)")
    freeze: list[str] = option([], "comma-separated regexes of parameter names to freeze")
    tiny_width: int = option(64, "init_from tiny: hidden width", min=1)
    tiny_layers: int = option(2, "init_from tiny: layers per tower", min=1)
    tiny_patch: int = option(8, "init_from tiny: patch size", min=1)
    patch_budgets: list[int] = option(PATCH_BUDGETS, "fgclip2: NaFlex patch budgets; each batch takes the smallest "
                                      "that holds its largest image's native grid (official rule)", min=1)
    # data
    data_format: str = option("auto", "auto = pairs for stage1, finehard for stage2",
                              choices=("auto", "pairs", "finehard"))
    strip_prefixes: list[str] = option(["grit-20m/data-12m/"], "prefixes removed from image paths in the data")
    image_size: int = option(224, "input resolution", min=1)
    max_boxes: int = option(4, "boxes per image in stage 2", min=1)
    short_prefix: str = option("a photo of ", "prepended to short captions")
    truncation: str = option("truncate", "captions longer than the text tower: cut and count, or stop",
                             choices=("error", "truncate"))
    eval_data: str = option("", "FineHARD-format split for periodic hard-negative accuracy ('' = none)")
    eval_image_root: str = option("", "image root of eval_data ('' = paths as written in it)")
    eval_every: int = option(0, "optimizer steps between periodic evaluations; 0 = off", min=0)
    eval_limit: int = option(512, "records of eval_data scored per evaluation", min=1)
    # optimisation (official stage-2 recipe)
    micro_batch_size: int = option(512, "samples per rank per forward pass", min=1)
    lr: float = option(1e-6, "peak learning rate (AdamW, warmup then cosine)", min=0.0)
    text_lr: float | None = option(None, "separate lr for text_model.* (official text_model_lr); none = lr",
                                   min=0.0)
    weight_decay: float = option(0.001, "AdamW weight decay (norms, biases and temperatures excluded)", min=0.0)
    warmup_steps: int = option(200, "linear warmup steps", min=0)
    min_lr_ratio: float = option(0.0, "cosine floor as a fraction of lr", min=0.0, max=1.0)
    output_dir: str = option("runs/clip", "where the model (hf/), checkpoints, metrics.jsonl and logs go")

    def validate(self) -> None:
        super().validate()
        if self.model == "fgclip2" and self.logit_scale_max is not None:
            raise ConfigError("config key 'logit_scale_max': FG-CLIP 2 trains its temperatures unclamped, as the "
                              "official trainer does; leave it unset (null) for model: fgclip2")
        if not self.patch_budgets:
            raise ConfigError("config key 'patch_budgets': needs at least one patch budget")
        if self.eval_data and not Path(self.eval_data).exists():
            raise ConfigError(f"config key 'eval_data': {self.eval_data} does not exist")

    @property
    def regional(self) -> bool:
        return self.stage == "stage2"

    @property
    def reader(self) -> str:
        if self.data_format != "auto":
            return self.data_format
        return "finehard" if self.regional else "pairs"
