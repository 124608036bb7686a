"""Shipped presets: the training recipes (YAML, paper sizes + `tiny_*`) and the DeepSpeed JSONs.

They are package data, found through `importlib.resources`, so `--config tiny_stage1` or `deepspeed_config: zero2`
work the same from a source checkout, an editable install or a wheel, from any working directory.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fgclip_lmm.errors import FGClipError

# kind -> folder of YAML recipes; the trainer of each kind reads only its own.
PRESET_KINDS: dict[str, str] = {"clip": "clip", "lmm": "lmm"}


class PresetError(FGClipError, ValueError):
    """An unknown preset or DeepSpeed config name; the message lists the known ones."""


def _root() -> Path:
    return Path(str(files(__package__)))


def preset_dir(kind: str) -> Path:
    if kind not in PRESET_KINDS:
        raise PresetError(f"unknown preset kind {kind!r}; known: {sorted(PRESET_KINDS)}")
    return _root() / PRESET_KINDS[kind]


def preset_names(kind: str) -> list[str]:
    return sorted(p.stem for p in preset_dir(kind).glob("*.yaml"))


def resolve_preset(name_or_path: str, kind: str) -> Path:
    """A YAML file path as given, else the shipped preset of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = preset_dir(kind) / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise PresetError(f"config {name_or_path!r} is neither a file nor a preset; known presets: {preset_names(kind)}")


def deepspeed_names() -> list[str]:
    return sorted(p.stem for p in (_root() / "ds").glob("*.json"))


def resolve_deepspeed_json(name_or_path: str) -> Path:
    """`zero2` / `zero3` (shipped) or a path to the user's own DeepSpeed JSON."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = _root() / "ds" / f"{name_or_path}.json"
    if candidate.is_file():
        return candidate
    raise PresetError(f"deepspeed_config {name_or_path!r} is neither a file nor a shipped config; "
                      f"known: {deepspeed_names()}")
