"""Loading and conversion of the three FG-CLIP 2 checkpoint formats users bring.

(a) ours: model_type "fgclip2", `longtext_len` at the top level, no `auto_map` -> plain `from_pretrained`.
(b) official FG-CLIP 2 (`qihoo360/fg-clip2-*`): model_type "fgclip2", `architectures` ["FG_CLIP2_Model"], an
    `auto_map` to remote code and `longtext_len` / `keep_len` inside `text_config`. The code is never executed:
    the config is mapped and the weights loaded strictly, keeping `logit_scale_finegraind` / `logit_scale_hardneg`
    (the official `from_pretrained` drops them); a checkpoint without them gets `fine_grained_logit_scale_init`,
    which is what the official trainer sets. The CMR margin (ours only) starts at 0, as in the official trainer.
(c) SigLIP 2 NaFlex (`google/siglip2-*-naflex`, model_type "siglip2"): initialised as the official trainer's
    `from_siglip2` does: the 64-row text table stretched to 196 rows into both long tables, `text_model.head` copied
    into `longtext_head` and `boxtext_head`, `vision_model.head` into `dense_feature_head`.
`convert.py` (`fgclip-lmm convert SRC OUT`) writes (b) or (c) as (a). Like `loading.py`, this module never imports
the model class (the model's `from_pretrained` calls into it).
"""
from __future__ import annotations

import torch

from fgclip_lmm.errors import CheckpointError

from .configuration_fgclip2 import FGCLIP2Config
from .loading import load_strict, read_config, read_state_dict, resolve_checkpoint_dir
from .positions import stretch_positions

THRESHOLD_KEY = "criterion.hard_loss.cmr_threshold"
DROPPED_SUBCONFIG_KEYS = ("model_type", "architectures", "auto_map", "_name_or_path", "transformers_version")


def fgclip2_kind(config: dict) -> str:
    """'ours', 'official' (qihoo360 FG-CLIP 2) or 'siglip2'; anything else raises naming the model_type."""
    model_type = config.get("model_type")
    if model_type == "fgclip2":
        return "ours" if "longtext_len" in config and "auto_map" not in config else "official"
    if model_type == "siglip2":
        return "siglip2"
    if model_type == "siglip":
        raise CheckpointError("config.json model_type='siglip' is a fixed-resolution SigLIP checkpoint; FG-CLIP 2 "
                              "starts "
                         "from a SigLIP 2 NaFlex checkpoint (model_type 'siglip2', e.g. "
                         "google/siglip2-base-patch16-naflex)")
    raise CheckpointError(f"config.json model_type={model_type!r}: expected 'fgclip2' (ours or official FG-CLIP 2) or "
                     "'siglip2' (a SigLIP 2 NaFlex checkpoint)")


def _subconfig(config: dict, key: str) -> dict:
    sub = config.get(key)
    if not isinstance(sub, dict):
        raise CheckpointError(f"config.json: {key} must be an object, got {type(sub).__name__}")
    return {k: v for k, v in sub.items() if k not in DROPPED_SUBCONFIG_KEYS}


def config_from_foreign(config: dict, kind: str) -> FGCLIP2Config:
    """Map an official FG-CLIP 2 or SigLIP 2 config dict to ours; `auto_map` and remote classes are dropped."""
    text, vision = _subconfig(config, "text_config"), _subconfig(config, "vision_config")
    extra = {}
    if kind == "official":  # the official config keeps these two in text_config
        for key in ("longtext_len", "keep_len"):
            if key in text:
                extra[key] = int(text.pop(key))
    return FGCLIP2Config(text_config=text, vision_config=vision, **extra)


def _scalar(value: torch.Tensor, key: str) -> torch.Tensor:
    if value.numel() != 1:
        raise CheckpointError(f"{key}: expected one value, got shape {tuple(value.shape)}")
    return value.reshape(()).float()


def convert_state_dict(state: dict[str, torch.Tensor], kind: str, config: FGCLIP2Config) -> dict[str, torch.Tensor]:
    """Official or SigLIP 2 state dict -> ours. Saved `position_ids` buffers are dropped (they can be garbage)."""
    out = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    init = torch.tensor(config.fine_grained_logit_scale_init)
    if kind == "siglip2":
        short = out["text_model.embeddings.position_embedding.weight"]
        table = stretch_positions(short, config.longtext_len, config.keep_len, config.position_stretch)
        out["text_model.embeddings.position_embedding_ori.weight"] = table
        out["text_model.embeddings.position_embedding_res.weight"] = table.clone()
        for head in ("longtext_head", "boxtext_head"):
            out[f"{head}.weight"] = out["text_model.head.weight"].clone()
            out[f"{head}.bias"] = out["text_model.head.bias"].clone()
        for key in [k for k in out if k.startswith("vision_model.head.")]:
            out["dense_feature_head." + key[len("vision_model.head."):]] = out[key].clone()
    for key in ("logit_scale_finegraind", "logit_scale_hardneg"):
        out[key] = _scalar(out[key], key) if key in out else init.clone()
    out.setdefault(THRESHOLD_KEY, torch.zeros((), dtype=torch.float32))
    return out


def load_fgclip2_checkpoint(cls, name_or_path, *args, **kwargs):
    path = resolve_checkpoint_dir(name_or_path)
    config = read_config(path)
    kind = fgclip2_kind(config)
    if kind == "ours":
        return cls._from_pretrained_native(path, *args, **kwargs)
    fg_config = config_from_foreign(config, kind)
    model = cls(fg_config)
    load_strict(model, convert_state_dict(read_state_dict(path), kind, fg_config), f"{path} ({kind} checkpoint)")
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    return model.eval()

