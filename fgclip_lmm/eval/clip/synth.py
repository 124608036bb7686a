"""Resolve eval-clip's `--data`: an explicit file / directory in the bench's official format, or the root of a
synthetic world (`fgclip-lmm synth`), whose files are found only through its `manifest.json`.

Synthetic sets (`--synth-set`): fgovd -> `files.fgovd.<set>` (test | heldout; one JSONL per split level),
boxcls -> `files.boxcls.<set>` (COCO instances), retrieval -> `files.retrieval.<set>` (long = ShareGPT4V JSON on
the 248-token path, short = COCO captions, 5 per image, on the 77 path). The world has no ImageFolder, so
zeroshot on a world classifies its images that hold exactly one object (from `files.boxcls.<set>`), labelled
with that object's "colour shape" category, against all categories. Image paths resolve under the world's
`settings.image_root`; the world's CLIP tokenizer is offered when the checkpoint ships none.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fgclip_lmm.data.synth.manifest import SynthManifest, load_manifest

from .formats import DataFormatError, ZeroShotData

DEFAULT_SETS = {"fgovd": "test", "boxcls": "test", "retrieval": "long", "zeroshot": "test"}


@dataclass(frozen=True)
class BenchDataConfig:
    """Where a bench's data lives: `path` (file or directory), or `files` (FG-OVD split files)."""

    path: Path
    image_root: Path | None = None
    files: tuple[Path, ...] = ()
    tokenizer: Path | None = None
    synth_set: str | None = None
    manifest: SynthManifest | None = None


def is_synth_root(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def _lookup(manifest: SynthManifest, bench: str, name: str):
    group = manifest["files"].get("boxcls" if bench == "zeroshot" else bench)
    if not isinstance(group, dict) or name not in group:
        known = sorted(group) if isinstance(group, dict) else []
        raise DataFormatError(f"{manifest.root}/manifest.json: no {bench} set {name!r} (--synth-set); known: {known}")
    return group[name]


def resolve_data(bench: str, path: Path, synth_set: str | None = None) -> BenchDataConfig:
    """A BenchDataConfig for `--data PATH`; a synth root is read through its manifest, anything else is taken as is."""
    if not is_synth_root(path):
        if synth_set is not None:
            raise DataFormatError("--synth-set needs --data to be a synthetic-world root with manifest.json; "
                                  f"{path} is not")
        return BenchDataConfig(path)
    try:
        manifest = load_manifest(path)
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        raise DataFormatError(f"{path}/manifest.json: not a synthetic-world manifest: {error}") from error
    name = synth_set or DEFAULT_SETS[bench]
    entry = _lookup(manifest, bench, name)
    tokenizers = manifest["files"].get("tokenizers", {})
    tokenizer = manifest.root / tokenizers["clip"] if isinstance(tokenizers, dict) and "clip" in tokenizers else None
    common = {"image_root": manifest.image_root, "tokenizer": tokenizer, "synth_set": name, "manifest": manifest}
    if bench == "fgovd":
        if not isinstance(entry, dict) or not entry:
            raise DataFormatError(f"{path}/manifest.json: files.fgovd.{name} must map split levels to JSONL files")
        files = tuple(manifest.path("fgovd", name, level) for level in entry)
        return BenchDataConfig(files[0].parent, files=files, **common)
    return BenchDataConfig(manifest.path("boxcls" if bench == "zeroshot" else bench, name), **common)


def read_synth_zeroshot(spec: BenchDataConfig) -> ZeroShotData:
    """Single-object images of a world's box-classification set, labelled with their object's category."""
    path = spec.path
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        label_of = {c["id"]: i for i, c in enumerate(categories)}
        per_image = Counter(a["image_id"] for a in coco["annotations"])
        label = {a["image_id"]: label_of[a["category_id"]]
                 for a in coco["annotations"] if per_image[a["image_id"]] == 1}
        images = [(spec.image_root / im["file_name"], label[im["id"]]) for im in coco["images"] if im["id"] in label]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataFormatError(f"{path}: cannot build the synthetic zero-shot set from this COCO instances file: "
                              f"{type(error).__name__}: {error}") from error
    if not images:
        raise DataFormatError(f"{path}: no single-object images for the synthetic zero-shot set")
    return ZeroShotData([p for p, _ in images], [y for _, y in images], [str(c["name"]) for c in categories], [path])
