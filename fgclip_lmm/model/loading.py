"""Loading and conversion of the three checkpoint formats users bring.

(a) ours: `config.json` with model_type "fgclip" -> plain `from_pretrained`.
(b) official FG-CLIP (`qihoo360/fg-clip-*`): model_type "clip" + an `auto_map` to remote code, weights already in
    FG-CLIP names. The remote code is never executed: the config is mapped and the weights loaded strictly.
(c) OpenAI CLIP in HF `CLIPModel` format: the 77-row table is stretched to the long length by the exact rule,
    `text_projection` is copied into `text_filip_projection`, and all three temperatures take `logit_scale`.
`convert.py` (`fgclip-lmm convert SRC OUT`) writes (b) or (c) as (a). This module never imports the model class
(the model's `from_pretrained` calls into it), so there is no import cycle.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from fgclip_lmm.errors import CheckpointError, checkpoint_errors

from .configuration_fgclip import FGCLIPConfig
from .positions import stretch_positions

CLIP_VOCAB = 49408  # the OpenAI BPE vocabulary; its bos/eos ids are 49406/49407
OFFICIAL_MARKER = "text_model.embeddings.position_embedding_res.weight"


def resolve_checkpoint_dir(name_or_path: str | Path) -> Path:
    """A local directory as is; otherwise a hub id fetched with `snapshot_download` (json + safetensors only)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/")):
        raise FileNotFoundError(f"checkpoint {name_or_path!s} is not a directory with a config.json")
    from huggingface_hub import snapshot_download

    with checkpoint_errors(name_or_path):
        return Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors", "*.txt"]))


def read_config(path: Path) -> dict:
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no config.json")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file}: not a valid JSON config ({error})") from error


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All safetensors shards of a checkpoint directory (a `.bin` is read with weights_only=True)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            with checkpoint_errors(path / shard):
                state.update(load_file(path / shard))
        return state
    if (path / "model.safetensors").is_file():
        with checkpoint_errors(path / "model.safetensors"):
            return load_file(path / "model.safetensors")
    if (path / "pytorch_model.bin").is_file():
        with checkpoint_errors(path / "pytorch_model.bin"):
            return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors, shard index or pytorch_model.bin")


def checkpoint_kind(config: dict, state_keys) -> str:
    """'fgclip' (ours), 'official' (qihoo360 FG-CLIP) or 'openai' (HF CLIPModel); anything else raises."""
    model_type = config.get("model_type")
    if model_type == "fgclip":
        return "fgclip"
    if model_type != "clip":
        raise CheckpointError(f"config.json model_type={model_type!r}: expected 'fgclip', or 'clip' for an official "
                              "FG-CLIP or OpenAI CLIP checkpoint")
    return "official" if OFFICIAL_MARKER in state_keys else "openai"


def config_from_clip(config: dict, long_max_len: int | None) -> FGCLIPConfig:
    """Map a `CLIPConfig` dict (official or OpenAI) to `FGCLIPConfig`; `auto_map` and remote classes are dropped."""
    text = dict(config.get("text_config") or {})
    vision = dict(config.get("vision_config") or {})
    if text.get("vocab_size", CLIP_VOCAB) == CLIP_VOCAB:
        # Official FGCLIPModel.__init__ forces these; old OpenAI HF configs carry the legacy eos id 2.
        text.update(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    keep = {k: config[k] for k in ("projection_dim", "logit_scale_init_value") if k in config}
    if long_max_len is not None:
        keep["long_max_len"] = long_max_len
    return FGCLIPConfig(text_config=text, vision_config=vision, **keep)


def convert_state_dict(state: dict[str, torch.Tensor], kind: str, config: FGCLIPConfig) -> dict[str, torch.Tensor]:
    """Official or OpenAI state dict -> ours. Saved `position_ids` buffers are dropped (they can be garbage)."""
    out = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    if kind == "openai":
        table = out["text_model.embeddings.position_embedding.weight"]
        long = stretch_positions(table, config.long_max_len, config.keep_len, config.position_stretch)
        out["text_model.embeddings.position_embedding_ori.weight"] = long
        out["text_model.embeddings.position_embedding_res.weight"] = long.clone()
        out["text_filip_projection.weight"] = out["text_projection.weight"].clone()
        out["logit_scale_finegraind"] = out["logit_scale"].clone()
        out["logit_scale_hardneg"] = out["logit_scale"].clone()
    return out


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{source}: state dict does not match the model: missing keys {sorted(missing)}, "
                              f"unexpected keys {sorted(unexpected)}")


def load_any_checkpoint(cls, name_or_path, *args, **kwargs):
    path = resolve_checkpoint_dir(name_or_path)
    config = read_config(path)
    if config.get("model_type") == "fgclip":
        with checkpoint_errors(path):
            return cls._from_pretrained_native(path, *args, **kwargs)
    state = read_state_dict(path)
    kind = checkpoint_kind(config, state.keys())
    long_len = state[OFFICIAL_MARKER].shape[0] if kind == "official" else None
    fg_config = config_from_clip(config, long_len)
    model = cls(fg_config)
    load_strict(model, convert_state_dict(state, kind, fg_config), f"{path} ({kind} checkpoint)")
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    return model.eval()


def load_clip_vision_model(name_or_path: str | Path) -> CLIPVisionModel:
    """The vision tower of any supported checkpoint as a plain `CLIPVisionModel` (strict load)."""
    path = resolve_checkpoint_dir(name_or_path)
    config = read_config(path)
    if config.get("model_type") not in {"fgclip", "clip"}:
        raise CheckpointError(f"{path}/config.json model_type={config.get('model_type')!r}: "
                              "expected 'fgclip' or 'clip'")
    vision = CLIPVisionModel(CLIPVisionConfig(**config["vision_config"]))
    prefix = "vision_model."
    state = {k[len(prefix):]: v for k, v in read_state_dict(path).items()
             if k.startswith(prefix) and not k.endswith("position_ids")}
    load_strict(vision, state, f"{path} (vision tower)")
    return vision.eval()
