"""Readers for the global-feature benchmarks: retrieval (ShareGPT4V / DCI / COCO captions) and zero-shot
ImageFolder classification. See `clip_formats` for the box benchmarks and the shared conventions.

Retrieval formats (docs/model.md, "Retrieval and zero-shot"):
- `sharegpt4v`: a JSON array; caption = `conversations[1]["value"]`, image = `item["image"]` under the image
  root (or its basename there, the official layout). The official protocol takes the first 1000 items.
- `dci`: a directory with one JSON object per image; caption = `extra_caption`, image = `image`.
- `coco`: `captions_*.json` (`images` + `annotations` with `caption`); the first N captions of each image.
"""
from __future__ import annotations

import json
from pathlib import Path

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy
from fgclip_lmm.errors import InputError

from .formats import (
    IMAGE_SUFFIXES,
    DataFormatError,
    RetrievalData,
    ZeroShotData,
    _load_json,
    _need_keys,
    coco_default_image_root,
)

RETRIEVAL_FORMATS = ("sharegpt4v", "dci", "coco")
SHAREGPT4V_DEFAULT_ITEMS = 1000


def detect_retrieval_format(path: Path) -> str:
    """`dci` for a directory, else by the JSON's shape; raises DataFormatError naming the file otherwise."""
    if path.is_dir():
        return "dci"
    head = path.read_bytes()[:4096].lstrip()
    if head.startswith(b"["):
        return "sharegpt4v"
    if head.startswith(b"{") and b'"annotations"' in path.read_bytes():
        return "coco"
    raise DataFormatError(f"{path}: not a retrieval file: expected a ShareGPT4V JSON array, a COCO captions JSON "
                          "object with 'images' and 'annotations', or a DCI annotation directory")


def _image_under(root: Path, name: str) -> Path:
    """`root/name` if it exists, else `root/basename(name)` (the official ShareGPT4V eval layout)."""
    full = root / name
    if full.exists():
        return full
    base = root / Path(name).name
    return base if base.exists() else full


def _add(data: RetrievalData, image: Path, record: str, captions: list[str]) -> None:
    data.text_to_image += [len(data.images)] * len(captions)
    data.images.append(image)
    data.image_records.append(record)
    data.texts += captions


def read_sharegpt4v(
    path: Path, image_root: Path | None, policy: BadRecordPolicy, max_items: int | None
) -> RetrievalData:
    items = _load_json(path, list, "ShareGPT4V captions")
    root = image_root if image_root is not None else path.parent
    data = RetrievalData([], [], [], [], "sharegpt4v", [path])
    for index, item in enumerate(items[:max_items] if max_items else items):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            policy.reject(BadReason.MISSING_FIELD, path, index, "image", "needs an 'image' path string")
            continue
        turns = item.get("conversations")
        caption = turns[1].get("value") if isinstance(turns, list) and len(turns) > 1 and isinstance(turns[1],
                                                                                                     dict) else None
        if not isinstance(caption, str) or not caption.strip():
            policy.reject(BadReason.EMPTY_CAPTION, path, index, "conversations[1].value", "missing or empty caption")
            continue
        _add(data, _image_under(root, item["image"]), f"{path} record {index}", [caption])
    return data


def read_dci(directory: Path, image_root: Path | None, policy: BadRecordPolicy, max_items: int | None) -> RetrievalData:
    files = sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.name != "manifest.json")
    if not files:
        raise DataFormatError(f"{directory}: a DCI annotation directory needs one *.json file per image")
    root = image_root
    if root is None:
        photos = directory.parent / "photos"
        root = photos if photos.is_dir() else directory
    data = RetrievalData([], [], [], [], "dci", [directory])
    for file in files[:max_items] if max_items else files:
        try:
            item = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            policy.reject(BadReason.INVALID_JSON, file, None, None, str(error))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            policy.reject(BadReason.MISSING_FIELD, file, None, "image", "needs an 'image' file name")
            continue
        caption = item.get("extra_caption")
        if not isinstance(caption, str) or not caption.strip():
            policy.reject(BadReason.EMPTY_CAPTION, file, None, "extra_caption", "missing or empty caption")
            continue
        _add(data, root / item["image"], str(file), [caption])
    return data


def read_coco_captions(path: Path, image_root: Path | None, policy: BadRecordPolicy, max_items: int | None,
                       captions_per_image: int = 5) -> RetrievalData:
    coco = _load_json(path, dict, "COCO captions")
    _need_keys(path, coco, ("images", "annotations"), "a COCO captions file")
    root = image_root if image_root is not None else coco_default_image_root(path)
    captions: dict = {}
    for index, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            policy.reject(BadReason.MISSING_FIELD, f"{path} annotations", index, "image_id", "missing")
            continue
        text = ann.get("caption")
        if not isinstance(text, str) or not text.strip():
            policy.reject(BadReason.EMPTY_CAPTION, f"{path} annotations", index, "caption",
                          "missing or empty (is this an instances file rather than captions?)")
            continue
        captions.setdefault(ann["image_id"], []).append(text)
    data = RetrievalData([], [], [], [], "coco", [path])
    images = coco["images"][:max_items] if max_items else coco["images"]
    for index, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            policy.reject(BadReason.MISSING_FIELD, f"{path} images", index, "file_name", "needs id and file_name")
            continue
        own = captions.get(image["id"], [])[:captions_per_image]
        if not own:
            policy.reject(BadReason.EMPTY_CAPTION, f"{path} images", index, "captions",
                          f"image id {image['id']} has none")
            continue
        _add(data, root / image["file_name"], f"{path} images record {index}", own)
    return data


def read_retrieval(path: Path, fmt: str, image_root: Path | None, policy: BadRecordPolicy,
                   max_items: int | None, captions_per_image: int = 5) -> RetrievalData:
    fmt = detect_retrieval_format(path) if fmt == "auto" else fmt
    if fmt == "sharegpt4v":
        return read_sharegpt4v(path, image_root, policy, SHAREGPT4V_DEFAULT_ITEMS if max_items is None else max_items)
    if fmt == "dci":
        if not path.is_dir():
            raise DataFormatError(f"{path}: the dci format is a directory of per-image JSON files")
        return read_dci(path, image_root, policy, max_items)
    if fmt == "coco":
        return read_coco_captions(path, image_root, policy, max_items, captions_per_image)
    raise InputError(f"unknown retrieval format {fmt!r}; known: auto, {', '.join(RETRIEVAL_FORMATS)}")


def _class_names(mapping: Path | None, dirs: list[str]) -> list[str]:
    """Names for the sorted class directories: from a JSON dict/list, `dir [index] name` lines, or the dir names."""
    if mapping is None:
        return [d.replace("_", " ") for d in dirs]
    if mapping.suffix == ".json":
        value = _load_json(mapping, (dict, list), "class names")  # type: ignore[arg-type]
        names = [value.get(d) for d in dirs] if isinstance(value, dict) else list(value)
    else:
        lines = [ln.split() for ln in mapping.read_text(encoding="utf-8").splitlines() if ln.strip()]
        by_dir = {}
        for parts in lines:
            if len(parts) >= 2 and parts[0] in dirs:
                rest = parts[2:] if len(parts) >= 3 and parts[1].isdigit() else parts[1:]
                by_dir[parts[0]] = " ".join(rest).replace("_", " ")
        names = [by_dir.get(d) for d in dirs] if by_dir else [" ".join(p) for p in lines]
    if len(names) != len(dirs) or not all(isinstance(n, str) and n for n in names):
        missing = next((d for d, n in zip(dirs, names, strict=True) if not n), None)
        raise DataFormatError(f"{mapping}: class names do not cover the {len(dirs)} class directories"
                              + (f" (no name for {missing!r})" if missing else f" ({len(names)} names given)"))
    return names


def read_image_folder(root: Path, classnames_file: Path | None, max_items: int | None) -> ZeroShotData:
    """torchvision ImageFolder layout: sorted class directories, image files found recursively in each."""
    if not root.is_dir():
        raise DataFormatError(f"{root}: zero-shot data must be an ImageFolder directory ROOT/<class>/<image>")
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not dirs:
        raise DataFormatError(f"{root}: no class sub-directories (ImageFolder layout ROOT/<class>/<image>)")
    data = ZeroShotData([], [], _class_names(classnames_file, dirs), [root])
    for label, name in enumerate(dirs):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        data.images += files
        data.labels += [label] * len(files)
    if not data.images:
        raise DataFormatError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) under the class directories")
    if max_items and max_items < len(data.images):  # an evenly spaced subset keeps every class represented
        step = -(-len(data.images) // max_items)
        data.images, data.labels = data.images[::step], data.labels[::step]
    return data
