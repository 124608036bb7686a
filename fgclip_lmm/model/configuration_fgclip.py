"""`FGCLIPConfig`: a `CLIPConfig` plus every number the official FG-CLIP code hard-codes.

One source of truth: text lengths, the stretch rule, loss weights, box and negative counts and token ids live
here and nowhere else. Token ids live in `text_config` (bos/eos/pad), exactly where HF CLIP keeps them.
"""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig


@strict
class FGCLIPConfig(CLIPConfig):
    r"""
    long_max_len (`int`, defaults to 248): rows of the long position tables (`position_embedding_ori/_res`).
    keep_len (`int`, defaults to 20): leading positions copied unchanged by the 77->long stretch.
    position_stretch (`int`, defaults to 4): stretch factor of the remaining positions.
    region_loss_weight (`float`, defaults to 0.1): weight of the regional contrastive term.
    hard_loss_weight (`float`, defaults to 0.5): weight of the hard-negative term.
    hard_negatives_per_box (`int`, defaults to 10): negatives per box phrase in the hard-negative term.
    max_boxes_per_image (`int`, defaults to 4): boxes used per image (official `max_anns`).
    logit_scale_max (`float`, optional): clamp for the three log-temperatures; None keeps the official no-clamp.
    """

    model_type = "fgclip"

    long_max_len: int = 248
    keep_len: int = 20
    position_stretch: int = 4
    region_loss_weight: float = 0.1
    hard_loss_weight: float = 0.5
    hard_negatives_per_box: int = 10
    max_boxes_per_image: int = 4
    logit_scale_max: float | None = None

    @property
    def short_max_len(self) -> int:
        """The short (77) path length is the text tower's own `max_position_embeddings`."""
        return self.text_config.max_position_embeddings

    def validate_architecture(self):
        short = self.text_config.max_position_embeddings
        if self.long_max_len < short:
            raise ValueError(f"long_max_len ({self.long_max_len}) must be >= text max_position_embeddings ({short})")
        if not 0 < self.keep_len < short - 1:
            raise ValueError(f"keep_len ({self.keep_len}) must be in (0, {short - 1})")
        text = self.text_config
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(text, name)
            if not isinstance(value, int) or not 0 <= value < text.vocab_size:
                raise ValueError(f"text_config.{name}={value!r} must be an id inside the vocabulary "
                                 f"({text.vocab_size})")

    @classmethod
    def tiny(cls, vocab_size: int = 512, image_size: int = 32, patch_size: int = 8, width: int = 32,
             layers: int = 2, projection_dim: int = 16, **overrides) -> FGCLIPConfig:
        """A laptop-sized preset (default 2 layers, width 32) with the real 77/248 text lengths."""
        heads = max(1, width // 32)
        tower = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                     num_attention_heads=heads, projection_dim=projection_dim)
        text = CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                              eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, **tower)
        vision = CLIPVisionConfig(image_size=image_size, patch_size=patch_size, **tower)
        kwargs = dict(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection_dim,
                      logit_scale_init_value=4.6052)
        kwargs.update(overrides)
        return cls(**kwargs)
