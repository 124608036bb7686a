"""Readers for the encoder benchmarks' official data formats, each validated record by record.

- FG-OVD (docs/model.md, "FG-OVD"): JSONL rows `img_path`, `bbox` (COCO xywh pixels), `pos_expression` [1 text],
  `neg_expression` [1..10 texts], optional `width` / `height` (the box's pixel frame); one file per split.
- COCO instances (`instances_*.json`; docs/model.md, "Box classification"): `images`, `annotations` (bbox xywh
  pixels), `categories`.
- Retrieval: ShareGPT4V JSON (caption = `conversations[1].value`), a DCI annotation directory (one JSON per
  image, caption = `extra_caption`), or COCO captions (`captions_*.json`, the first N captions per image).
- Zero-shot: an ImageFolder tree `ROOT/<class dir>/<image>`, class names optionally mapped by a file.

Bad records go through the data layer's policy (`error` names file, record index (0-based) and field; `skip`
counts). Box rows keep pixel xywh plus their frame; normalisation happens once the frame is known.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy
from fgclip_lmm.data.records_io import read_records
from fgclip_lmm.errors import FGClipError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")
FGOVD_SPLITS = {"1_attributes": "hard", "h_attributes": "hard", "2_attributes": "medium", "m_attributes": "medium",
                "3_attributes": "easy", "e_attributes": "easy", "shuffle_negatives": "trivial"}
FGOVD_MAX_NEGATIVES = 10


class DataFormatError(FGClipError, ValueError):
    """A data file that is not in the expected format at all (raised whatever the bad-record policy)."""


@dataclass
class BoxTable:
    """Boxes grouped by image: pixel xywh boxes, their pixel frame (NaN = the decoded image's size)."""

    images: list[Path] = field(default_factory=list)
    box_image: list[int] = field(default_factory=list)
    boxes_xywh: list[list[float]] = field(default_factory=list)
    frames: list[tuple[float, float]] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # "file record i", for error messages
    _image_ids: dict[Path, int] = field(default_factory=dict, repr=False)

    def add(self, image: Path, box: list[float], frame: tuple[float, float], record: str) -> None:
        index = self._image_ids.setdefault(image, len(self.images))
        if index == len(self.images):
            self.images.append(image)
        self.box_image.append(index)
        self.boxes_xywh.append(box)
        self.frames.append(frame)
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.box_image)


@dataclass
class FGOVDData:
    """FG-OVD rows: one box each, its positive and negatives, and the split it belongs to."""

    boxes: BoxTable
    positives: list[str]
    negatives: list[list[str]]
    split_of_row: list[int]
    splits: list[str]
    sources: list[Path]


@dataclass
class BoxClsData:
    """COCO-style boxes with a category label (index into `classnames`)."""

    boxes: BoxTable
    labels: list[int]
    classnames: list[str]
    sources: list[Path]


@dataclass
class RetrievalData:
    """Images and their captions; `text_to_image[j]` is the image of caption j."""

    images: list[Path]
    image_records: list[str]
    texts: list[str]
    text_to_image: list[int]
    format: str
    sources: list[Path]


@dataclass
class ZeroShotData:
    images: list[Path]
    labels: list[int]
    classnames: list[str]
    sources: list[Path]


def _box(value, frame: tuple[float, float], where: tuple, policy: BadRecordPolicy) -> list[float] | None:
    """Validate a COCO xywh pixel box against its frame; None (after `policy.reject`) when bad."""
    if not (isinstance(value, (list, tuple)) and len(value) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        policy.reject(BadReason.MISSING_FIELD, *where, "bbox", f"expected 4 finite numbers [x, y, w, h], got {value!r}")
        return None
    x, y, w, h = map(float, value)
    if w <= 0 or h <= 0:
        policy.reject(BadReason.BOX_DEGENERATE, *where, "bbox", f"{value} has zero or negative width/height")
        return None
    width, height = frame
    tol = 1.0  # COCO boxes overrun their image by rounding; the overrun is clamped later
    if x < -tol or y < -tol or (not math.isnan(width) and (x >= width or x + w > width + tol)) or \
            (not math.isnan(height) and (y >= height or y + h > height + tol)):
        policy.reject(BadReason.BOX_OUT_OF_RANGE, *where, "bbox", f"{value} lies outside the {width}x{height} image")
        return None
    return [x, y, w, h]


def _frame(record: dict, width_key: str = "width", height_key: str = "height") -> tuple[float, float]:
    w, h = record.get(width_key), record.get(height_key)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (w, h))
    return (float(w), float(h)) if ok else (math.nan, math.nan)


def _texts(value, n_min: int, n_max: int) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        return None
    return value if n_min <= len(value) <= n_max else None


def fgovd_split_name(path: Path) -> str:
    """`1_attributes_llava.jsonl` -> hard, ..., `shuffle_negatives_llava.jsonl` -> trivial; else the stem."""
    stem = path.stem
    for key, name in FGOVD_SPLITS.items():
        if stem.startswith(key):
            return name
    return stem


def read_fgovd(files: Iterable[Path], image_root: Path | None, policy: BadRecordPolicy) -> FGOVDData:
    """Read one FG-OVD JSONL file per split; `image_root` defaults to each file's directory."""
    data = FGOVDData(BoxTable(), [], [], [], [], [])
    for path in files:
        split = fgovd_split_name(path)
        if split in data.splits:
            raise DataFormatError(f"{path}: split {split!r} given twice ({data.sources[data.splits.index(split)]})")
        data.splits.append(split)
        data.sources.append(path)
        root = image_root if image_root is not None else path.parent
        for index, row in read_records(path, policy):
            where = (path, index)
            missing = [k for k in ("img_path", "bbox", "pos_expression", "neg_expression") if k not in row]
            if missing:
                policy.reject(BadReason.MISSING_FIELD, *where, missing[0],
                              "not an FG-OVD row (needs img_path, bbox, pos_expression, neg_expression); has "
                              f"{sorted(row)[:8]}")
                continue
            if not isinstance(row["img_path"], str) or not row["img_path"]:
                policy.reject(BadReason.MISSING_FIELD, *where, "img_path", f"expected a path, got {row['img_path']!r}")
                continue
            pos = _texts(row["pos_expression"], 1, 1)
            if pos is None:
                policy.reject(BadReason.EMPTY_CAPTION, *where, "pos_expression",
                              f"expected exactly 1 non-empty text, got {row['pos_expression']!r}")
                continue
            negs = _texts(row["neg_expression"], 1, FGOVD_MAX_NEGATIVES)
            if negs is None:
                policy.reject(BadReason.WRONG_NEGATIVE_COUNT, *where, "neg_expression",
                              f"expected 1..{FGOVD_MAX_NEGATIVES} non-empty texts, got {row['neg_expression']!r}")
                continue
            frame = _frame(row)
            box = _box(row["bbox"], frame, where, policy)
            if box is None:
                continue
            data.boxes.add(root / row["img_path"], box, frame, f"{path} record {index}")
            data.positives.append(pos[0])
            data.negatives.append(negs)
            data.split_of_row.append(len(data.splits) - 1)
    return data


def _load_json(path: Path, expect: type, what: str):
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataFormatError(f"{path}: not a valid UTF-8 JSON file ({what}): {error}") from error
    if not isinstance(value, expect):
        raise DataFormatError(f"{path}: expected a JSON {expect.__name__} ({what}), got {type(value).__name__}")
    return value


def _need_keys(path: Path, value: dict, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if not isinstance(value.get(k), list)]
    if missing:
        raise DataFormatError(f"{path}: not {what}: top-level list {missing[0]!r} is missing (has {sorted(value)[:8]})")


def coco_default_image_root(path: Path) -> Path:
    """`.../annotations/instances_val2017.json` -> `.../val2017` when it exists, else the file's directory."""
    split = path.stem.split("_", 1)[-1]
    guess = path.parent.parent / split
    return guess if path.parent.name == "annotations" and guess.is_dir() else path.parent


def _coco_images(path: Path, coco: dict, root: Path, policy: BadRecordPolicy) -> dict:
    images = {}
    for index, image in enumerate(coco["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            policy.reject(BadReason.MISSING_FIELD, f"{path} images", index, "file_name",
                          f"need id and file_name: {image!r}")
            continue
        images[image["id"]] = (root / image["file_name"], _frame(image))
    return images


def read_coco_instances(path: Path, image_root: Path | None, policy: BadRecordPolicy,
                        exclude_crowd: bool = False) -> BoxClsData:
    """Every GT annotation of a COCO `instances_*.json` as a labelled box (crowd boxes kept unless excluded)."""
    coco = _load_json(path, dict, "COCO instances")
    _need_keys(path, coco, ("images", "annotations", "categories"), "a COCO instances file")
    root = image_root if image_root is not None else coco_default_image_root(path)
    categories = sorted((c for c in coco["categories"] if isinstance(c, dict) and "id" in c and "name" in c),
                        key=lambda c: c["id"])
    if len(categories) != len(coco["categories"]) or not categories:
        raise DataFormatError(f"{path}: every entry of 'categories' needs 'id' and 'name'")
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    images = _coco_images(path, coco, root, policy)
    data = BoxClsData(BoxTable(), [], [str(c["name"]) for c in categories], [path])
    source = f"{path} annotations"
    for index, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict) or "bbox" not in ann or "image_id" not in ann or "category_id" not in ann:
            policy.reject(BadReason.MISSING_FIELD, source, index, None, "needs image_id, bbox and category_id")
            continue
        if exclude_crowd and ann.get("iscrowd", 0):
            continue
        if ann["image_id"] not in images:
            policy.reject(BadReason.MISSING_FIELD, source, index, "image_id", f"{ann['image_id']!r} is not in 'images'")
            continue
        if ann["category_id"] not in label_of:
            policy.reject(BadReason.MISSING_FIELD, source, index, "category_id",
                          f"{ann['category_id']!r} is not in 'categories'")
            continue
        image, frame = images[ann["image_id"]]
        box = _box(ann["bbox"], frame, (source, index), policy)
        if box is not None:
            data.boxes.add(image, box, frame, f"{source} record {index}")
            data.labels.append(label_of[ann["category_id"]])
    return data
