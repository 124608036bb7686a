"""Demo presets: `default` (the README's `make demo`, < 15 min on 2 CPU cores) and `tiny` (< 3 min, for CI)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

ENCODER_FAMILIES = ("fgclip", "fgclip2")


@dataclass(frozen=True)
class DemoConfig:
    encoder: str = "fgclip"         # fgclip: CLIP vs FG-CLIP; fgclip2: SigLIP 2 NaFlex vs FG-CLIP 2 (same recipe)
    images: int = 3000              # synthetic world size (train 80% / val 5% / test 10% / heldout 5%)
    image_size: int = 48            # 48 px / 16 px patches: a 3 x 3 grid, one token per object cell (issue 15)
    seed: int = 0
    clip_width: int = 64            # tiny FG-CLIP towers (both encoders share the architecture and init)
    clip_layers: int = 2
    clip_patch: int = 16
    clip_batch: int = 32
    clip_lr: float = 1e-3
    stage1_steps: int = 150         # FG-CLIP stage 1; the CLIP baseline then continues stage 1 for stage2_steps
    stage2_steps: int = 300
    eval_every: int = 75
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_init_std: float = 0.125     # initializer_range of the random LLM (~hidden^-0.5; Llama's 0.02 learns slower)
    llm_text_steps: int = 800       # text pretraining of the random LLM on WORLD/llava/text.json (0: none)
    llm_text_lr: float = 1e-3
    llm_text_batch: int = 32
    projector_init: str = "match_text"  # train-lmm align: standardised, text-scaled projector (issue 15)
    template: str = "vicuna_v1_nosys"   # vicuna_v1 without the system prompt (3x shorter samples at this size)
    lmm_batch: int = 32
    align_steps: int = 150
    finetune_steps: int = 3000
    align_lr: float = 1e-3
    finetune_lr: float = 1e-3
    model_max_length: int = 384     # the longest world conversation is ~220 tokens with its 9 image tokens
    pope_limit: int = 200           # questions per POPE split
    attr_limit: int = 200           # MME-style rows per attribute (pairs: even)
    eval_batch: int = 16
    heatmap_images: int = 3
    patch_budgets: tuple[int, ...] = (4, 9)  # fgclip2: NaFlex budgets (a 48 px world image is 9 patches of 16 px)

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_FAMILIES:
            raise ValueError(f"DemoConfig.encoder={self.encoder!r}; known: {', '.join(ENCODER_FAMILIES)}")

    def fingerprint(self, *keys: str) -> dict:
        values = asdict(self)  # tuples as lists: fingerprints are compared with their JSON record
        return {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in keys}


PRESETS = {
    "default": DemoConfig(),
    "tiny": DemoConfig(images=240, clip_width=32, clip_batch=16, stage1_steps=6, stage2_steps=6, eval_every=6,
                       llm_hidden=32, llm_text_steps=4, lmm_batch=8, align_steps=4, finetune_steps=6, pope_limit=24,
                       attr_limit=12,
                       heatmap_images=2),
}
