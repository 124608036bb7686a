"""`FGCLIP2Config`: a `Siglip2Config` plus every number the official FG-CLIP 2 code hard-codes.

One source of truth (docs/fgclip2.md, "Model"): the 64 -> 196 text stretch (`keep_len`, `position_stretch`,
`longtext_len`), the stage-2 loss weights (long + short + 0.2 region + 0.1 TIC + 0.5 (0.6 itc + 3 pair + 0.4 cmr)),
the TIC top-k and near-duplicate cut, the CMR threshold clamp, negatives per box and the fine-grained temperature
the official trainer starts from. The official config keeps `longtext_len` / `keep_len` inside `text_config`; ours
keeps them at the top level (typed), and `loading_fgclip2` maps one onto the other.
"""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig

from .positions import default_long_length


@strict
class FGCLIP2Config(Siglip2Config):
    r"""
    longtext_len (`int`, defaults to 196): rows of `position_embedding_ori/_res`; the long walk takes exactly this many
        tokens (official `max_seq_length` 64*4-60).
    keep_len (`int`, defaults to 20): leading positions copied unchanged by the 64 -> 196 stretch (and the split
        between `position_embedding_ori` and `position_embedding_res` on the long walk).
    position_stretch (`int`, defaults to 4): stretch factor of the remaining positions.
    region_loss_weight (`float`, defaults to 0.2): weight of the region<->phrase contrastive term.
    region_text_loss_weight (`float`, defaults to 0.1): weight of the textual intra-modal contrastive term (TIC).
    hard_loss_weight (`float`, defaults to 0.5): weight of the hard-negative total.
    hard_itc_weight / hard_pair_weight / hard_cmr_weight (`float`, 0.6 / 3.0 / 0.4): the hard-negative total's parts.
    tic_top_k (`int`, defaults to 10): similarities per row entering TIC's logsumexp.
    tic_max_similarity (`float`, defaults to 0.95): phrase similarities above this (near duplicates) count as 0.
    cmr_threshold_max (`float`, defaults to 10.0): upper clamp of the cross-modal-rank margin.
    hard_negatives_per_box (`int`, defaults to 10): negatives per box phrase.
    max_boxes_per_image (`int`, defaults to 4): boxes used per image (official `max_anns`).
    fine_grained_logit_scale_init (`float`, defaults to 4.6052): the official trainer's `log_scale`, the start of
        `logit_scale_finegraind` and `logit_scale_hardneg`.
    """

    model_type = "fgclip2"

    longtext_len: int = 196
    keep_len: int = 20
    position_stretch: int = 4
    region_loss_weight: float = 0.2
    region_text_loss_weight: float = 0.1
    hard_loss_weight: float = 0.5
    hard_itc_weight: float = 0.6
    hard_pair_weight: float = 3.0
    hard_cmr_weight: float = 0.4
    tic_top_k: int = 10
    tic_max_similarity: float = 0.95
    cmr_threshold_max: float = 10.0
    hard_negatives_per_box: int = 10
    max_boxes_per_image: int = 4
    fine_grained_logit_scale_init: float = 4.6052

    @property
    def short_max_len(self) -> int:
        """The short / box path length (64) is the text tower's own `max_position_embeddings`."""
        return self.text_config.max_position_embeddings

    @property
    def long_max_len(self) -> int:
        """`longtext_len` under v1's name, for code that serves both generations (benchmark reports)."""
        return self.longtext_len

    def validate_architecture(self):
        short = self.text_config.max_position_embeddings
        if not 0 < self.keep_len < short - 1:
            raise ValueError(f"keep_len ({self.keep_len}) must be in (0, {short - 1})")
        if self.longtext_len < short:
            raise ValueError(f"longtext_len ({self.longtext_len}) must be >= text max_position_embeddings ({short})")
        side = round(self.vision_config.num_patches ** 0.5)
        if side * side != self.vision_config.num_patches:
            raise ValueError(f"vision_config.num_patches ({self.vision_config.num_patches}) must be a square "
                             "(the learned position table is side x side)")
        if self.tic_top_k < 1 or self.hard_negatives_per_box < 1:
            raise ValueError(f"tic_top_k ({self.tic_top_k}) and hard_negatives_per_box "
                             f"({self.hard_negatives_per_box}) must be >= 1")

    @property
    def stretch_is_official(self) -> bool:
        """True when `longtext_len` is what the official rule yields from the short table (196 from 64)."""
        return self.longtext_len == default_long_length(self.short_max_len, self.keep_len, self.position_stretch)

    @classmethod
    def tiny(cls, vocab_size: int = 512, patch_size: int = 8, width: int = 32, layers: int = 2,
             position_grid: int = 4, **overrides) -> FGCLIP2Config:
        """A laptop-sized preset (2 layers, width 32, a 4x4 position table) with the real 64/196 text lengths."""
        heads = max(1, width // 16)
        tower = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers,
                 "num_attention_heads": heads}
        text = Siglip2TextConfig(vocab_size=vocab_size, max_position_embeddings=64, bos_token_id=vocab_size - 2,
                                 eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, **tower)
        vision = Siglip2VisionConfig(patch_size=patch_size, num_patches=position_grid ** 2, **tower)
        kwargs = {"text_config": text.to_dict(), "vision_config": vision.to_dict()}
        kwargs.update(overrides)
        return cls(**kwargs)
