"""Demo presets: `default` (the README's `make demo`, < 15 min on 2 CPU cores) and `tiny` (< 3 min, for CI)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DemoConfig:
    images: int = 3000              # synthetic world size (train 80% / val 5% / test 10% / heldout 5%)
    image_size: int = 64
    seed: int = 0
    clip_width: int = 64            # tiny FG-CLIP towers (both encoders share the architecture and init)
    clip_layers: int = 2
    clip_patch: int = 8
    clip_batch: int = 32
    clip_lr: float = 1e-3
    stage1_steps: int = 150         # FG-CLIP stage 1; the CLIP baseline then continues stage 1 for stage2_steps
    stage2_steps: int = 300
    eval_every: int = 75
    llm_hidden: int = 64
    llm_layers: int = 2
    lmm_batch: int = 16
    align_steps: int = 40
    finetune_steps: int = 400
    align_lr: float = 1e-2
    finetune_lr: float = 1e-3
    model_max_length: int = 256
    pope_limit: int = 300           # questions per POPE split
    attr_limit: int = 240           # MME-style rows per attribute (pairs: even)
    eval_batch: int = 16
    heatmap_images: int = 3

    def fingerprint(self, *keys: str) -> dict:
        values = asdict(self)
        return {k: values[k] for k in keys}


PRESETS = {
    "default": DemoConfig(),
    "tiny": DemoConfig(images=240, clip_width=32, clip_batch=16, stage1_steps=6, stage2_steps=6, eval_every=6,
                       llm_hidden=32, lmm_batch=8, align_steps=4, finetune_steps=6, pope_limit=24, attr_limit=12,
                       heatmap_images=2),
}
