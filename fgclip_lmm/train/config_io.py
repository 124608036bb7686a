"""Typed YAML configs with command-line overrides: the one config idiom of the training commands.

A config is a flat dataclass whose fields are declared with `option(default, "one-line help", choices=..., min=...)`.
`load_config(Cls, argv, kind)` reads `--config NAME_OR_PATH` (a preset name is looked up in the shipped presets of
that kind, `fgclip_lmm/presets/`), applies `--key value` overrides, converts every value to its annotated type,
checks the declared choices and bounds, then runs the class's own `validate()` for rules across keys. Every failure
is a `ConfigError` naming the key. `describe` renders `--help` from the same field metadata.

This module imports only the standard library and PyYAML, so `--help` and config errors answer before torch loads.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path

import yaml

from ..errors import FGClipError
from ..presets import PresetError, preset_names, resolve_preset


class ConfigError(FGClipError, ValueError):
    """A config key that is unknown, of the wrong type, outside its allowed values, or inconsistent with another."""


def option(default, help: str, *, choices: tuple | None = None, min: float | None = None,  # noqa: A002
           max: float | None = None):
    """A config field: its default, a one-line description (shown by `--help`), and optional allowed values or
    inclusive bounds that `load_config` checks (None always passes a bound: it means "off" / "default")."""
    metadata: dict = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if min is not None:
        metadata["min"] = min
    if max is not None:
        metadata["max"] = max
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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


def check_bounds(config) -> None:
    """The `choices` / `min` / `max` declared with `option`, for every field (list fields element-wise)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            choices = f.metadata.get("choices")
            if choices is not None and item not in choices:
                raise ConfigError(f"config key {f.name!r}: {item!r} is not one of {'|'.join(map(str, choices))}")
            if "min" in f.metadata and item < f.metadata["min"]:
                raise ConfigError(f"config key {f.name!r}: must be >= {f.metadata['min']}, got {item!r}")
            if "max" in f.metadata and item > f.metadata["max"]:
                raise ConfigError(f"config key {f.name!r}: must be <= {f.metadata['max']}, got {item!r}")


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
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):  # `-3` is a value, `--key` the next key
            value, i = argv[i + 1], i + 2
        else:
            value, i = "true", i + 1
        out[key.replace("-", "_")] = value
    return out


def read_values(overrides: dict[str, str], kind: str) -> tuple[dict, str | None]:
    """The YAML values of `--config` (popped from `overrides`) updated with the overrides, and the config's label
    (preset name or file name, never an absolute path)."""
    values: dict = {}
    label = None
    if "config" in overrides:
        name = overrides.pop("config")
        try:
            path = resolve_preset(name, kind)
        except PresetError as error:
            raise ConfigError(str(error)) from None
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config {name!r}: not valid YAML ({str(error).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config {name!r}: expected a mapping of config keys")
        label = f"file {path.name!r}" if Path(name).is_file() else f"preset {name!r}"
    values.update(overrides)
    return values, label


def load_config(cls, argv: list[str], kind: str):
    """`--config X` (file or preset) plus `--key value` overrides -> a validated `cls` instance."""
    values, _ = read_values(parse_overrides(argv), kind)
    config = build_config(cls, values)
    check_bounds(config)
    if hasattr(config, "validate"):
        config.validate()
    return config


def dump_config(config, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _type_name(args[0]) + "?"
    if origin is list:
        return "list[" + _type_name(typing.get_args(annotation)[0]) + "]"
    return getattr(annotation, "__name__", str(annotation))


def describe(cls, kind: str, command: str, argv: list[str] = ()) -> str:
    """`--help`: every key with its type, default (the preset's value when `--config` is given) and description."""
    overrides = parse_overrides([a for a in argv if a not in ("-h", "--help")])
    values, label = read_values({"config": overrides["config"]} if "config" in overrides else {}, kind)
    hints = typing.get_type_hints(cls)
    defaults = dataclasses.asdict(build_config(cls, values))
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    own = [by_name[name] for name in getattr(cls, "__annotations__", {}) if name in by_name]
    shared = [f for f in by_name.values() if f not in own]
    lines = [f"usage: fgclip-lmm {command} --config PRESET_OR_YAML [--key value ...] [--debug]",
             f"       (keys of {cls.__name__}; defaults " + (f"from {label})" if label else "built in)"), ""]
    for title, group in ((f"{command} keys:", own), ("keys shared by both trainers:", shared)):
        if not group:
            continue
        lines.append(title)
        for f in group:
            help_ = f.metadata.get("help", "")
            if "choices" in f.metadata:
                help_ += f" ({'|'.join(map(str, f.metadata['choices']))})"
            lines.append(f"  --{f.name:<26} {_type_name(hints[f.name]):<11} {help_} [default {defaults[f.name]!r}]")
        lines.append("")
    lines += [f"presets: {', '.join(preset_names(kind))}",
              "--debug (or FGCLIP_DEBUG=1) shows the full traceback of an error."]
    return "\n".join(lines)
