"""`LmmTrainConfig`: the LLaVA-style instruction-tuning knobs in one typed, flat dataclass (presets in
fgclip_lmm/presets/lmm/)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..lmm.templates import TEMPLATES
from .common_config import TrainConfig
from .config_io import ConfigError, option

STAGES = ("align", "finetune")
TUNINGS = ("frozen", "full", "lora")
PROJECTOR_INITS = ("keep", "match_text")
CALIBRATION_SAMPLES = 64  # image samples of the match_text calibration batch


@dataclass
class LmmTrainConfig(TrainConfig):
    stage: str = option("finetune", "align: projector only, plain template; finetune: LLM full or LoRA",
                        choices=STAGES)
    model: str = option("", "an assembled LMM dir (`fgclip-lmm assemble`) or the previous stage's hf/")
    template: str = option("auto", "conversation template; auto = plain for align, the assembled one for finetune",
                           choices=("auto", *TEMPLATES))
    llm_tuning: str = option("full", "finetune: how the LLM trains (align always freezes it)", choices=TUNINGS)
    tower_tuning: str = option("frozen", "how the vision tower trains", choices=TUNINGS)
    lora_r: int = option(128, "LoRA rank", min=1)
    lora_alpha: int = option(256, "LoRA alpha", min=1)
    lora_dropout: float = option(0.05, "LoRA dropout", min=0.0, max=1.0)
    model_max_length: int = option(2048, "tokens per sample; longer conversations are cut (counted as truncated)",
                                   min=1)
    group_by_modality_length: bool = option(True, "batch image and text-only samples apart, by similar length")
    projector_lr: float | None = option(None, "separate lr for the projector (LoRA recipe: 2e-5); none = lr",
                                        min=0.0)
    projector_init: str = option("keep", "align from a fresh assembly: keep the assembled projector, or match_text: "
                                 "standardise the tower features into linear_1 and scale linear_2 so image tokens "
                                 "start centred at the text embeddings' RMS norm (fgclip_lmm.lmm.projector_init)",
                                 choices=PROJECTOR_INITS)
    warmup_ratio: float = option(0.03, "linear warmup as a fraction of the steps", min=0.0, max=1.0)
    zero_stage: int = option(3, "DeepSpeed ZeRO stage (LoRA runs use 2)", choices=(0, 1, 2, 3))
    output_dir: str = option("runs/lmm", "where the model (hf/), checkpoints, metrics.jsonl and logs go")

    def validate(self) -> None:
        super().validate()
        if not self.model:
            raise ConfigError("config key 'model' is required")
        if not Path(self.model).exists():
            raise ConfigError(f"config key 'model': {self.model} does not exist")
        if self.zero_stage == 3 and "lora" in (self.llm_tuning, self.tower_tuning):
            raise ConfigError("config key 'zero_stage': LoRA runs use ZeRO-2 here (QLoRA/LoRA recipes use zero2)")

    @property
    def llm_mode(self) -> str:
        return "frozen" if self.stage == "align" else self.llm_tuning
