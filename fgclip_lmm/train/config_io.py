"""Typed YAML configs with command-line overrides.

A config is a flat dataclass. `load_config(Cls, argv)` reads `--config NAME_OR_PATH` (a preset name is looked up in
the shipped presets of that kind, `fgclip_lmm/presets/`), then applies `--key value` overrides for any field. An unknown key, a value of the wrong
type or a missing required path fails before training starts, naming the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from ..presets import PresetError, preset_names, resolve_preset


class ConfigError(ValueError):
    pass


def _convert(name: str, value, annotation):
    """Convert `value` (from YAML or a CLI string) to the field's annotated type or raise ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null"}):
            return None
        return _convert(name, value, args[0])
    if origin is list:
        (inner,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if not isinstance(value, list):
            raise ConfigError(f"config key {name!r}: expected a list, got {value!r}")
        return [_convert(name, v, inner) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"config key {name!r}: expected true/false, got {value!r}")
    if annotation in (int, float, str):
        if isinstance(value, bool) or (annotation is str and not isinstance(value, (str, int, float))):
            raise ConfigError(f"config key {name!r}: expected {annotation.__name__}, got {value!r}")
        try:
            converted = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {name!r}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"config key {name!r}: expected int, got {value!r}")
        return converted
    raise ConfigError(f"config key {name!r}: unsupported type {annotation}")


def build_config(cls, values: dict):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {cls.__name__}; known keys: {sorted(names)}")
    return cls(**{k: _convert(k, v, hints[k]) for k, v in values.items()})


def parse_overrides(argv: list[str]) -> dict[str, str]:
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --key value")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value, i = argv[i + 1], i + 2
        else:
            value, i = "true", i + 1
        out[key.replace("-", "_")] = value
    return out


def load_config(cls, argv: list[str], kind: str):
    """`--config X` (file or preset) plus `--key value` overrides -> a validated `cls` instance."""
    overrides = parse_overrides(argv)
    values: dict = {}
    if "config" in overrides:
        try:
            path = resolve_preset(overrides.pop("config"), kind)
        except PresetError as error:
            raise ConfigError(str(error)) from None
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
    values.update(overrides)
    config = build_config(cls, values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def dump_config(config, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def describe(cls, kind: str) -> str:
    """`--help` text: every key with its type and default, and the presets."""
    hints = typing.get_type_hints(cls)
    lines = [f"usage: --config PRESET_OR_YAML [--key value ...]   ({cls.__name__})", "", "keys:"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        type_name = getattr(hints[f.name], "__name__", str(hints[f.name]))
        lines.append(f"  --{f.name:<28} {type_name:<14} default {default!r}")
    lines += ["", "presets: " + ", ".join(preset_names(kind))]
    return "\n".join(lines)
