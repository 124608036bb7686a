"""Inputs of the datagen steps: image folders, FineHARD files validated by the [data] readers, image loading.

Validation is the data engineer's: `fgclip_lmm.data.finehard.parse_finehard_record` under the shared
`BadRecordPolicy` (`error` raises naming file, record and field; `skip` drops the record or box and counts it).
A dropped input record still becomes a work item, marked rejected with reason `input:<reason>`, so it is counted
in the step's stats and keeps the input numbering; a dropped box is counted as `input_box:<reason>`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy
from fgclip_lmm.data.base import PathOutsideRootError, resolve_image_path
from fgclip_lmm.data.finehard import FineHardConfig, parse_finehard_record
from fgclip_lmm.data.images import ImageTooLargeError, load_rgb
from fgclip_lmm.data.records_io import read_records, resolve_data_files
from fgclip_lmm.datagen.runner import WorkItem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
STRIP_PREFIXES = ("grit-20m/data-12m/",)


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be used: the bad-record reason and its message (file, record, field)."""

    reason: str
    detail: str


def list_images(image_root: str) -> list[str]:
    """Every image under `image_root` (recursive), as sorted POSIX paths relative to it."""
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    found = sorted(str(PurePosixPath(p.relative_to(root).as_posix()))
                   for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise FileNotFoundError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def image_items(image_root: str, input_path: str | None, policy: BadRecordPolicy) -> list[WorkItem]:
    """Recaption inputs: every image of the folder, or the records of `input_path` (fields f_path[, short_caption])."""
    if input_path is None:
        return [WorkItem(i, f, {"f_path": f}) for i, f in enumerate(list_images(image_root))]
    items = []
    for path in resolve_data_files(input_path):
        for index, raw in read_records(path, policy):
            f_path = raw.get("f_path")
            if not isinstance(f_path, str) or not f_path.strip():
                policy.reject(BadReason.MISSING_FIELD, str(path), index, "f_path", "expected an image path string")
                items.append(WorkItem(len(items), "", {}, rejected=f"input:{BadReason.MISSING_FIELD.value}",
                                      detail=policy.last_message))
            else:
                items.append(WorkItem(len(items), f_path, raw))
    return items


def _skip_diff(policy: BadRecordPolicy, before: dict[str, int]) -> Counter:
    after = policy.report.skipped
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0})


def finehard_items(input_path: str, policy: BadRecordPolicy, image_root: str | None, mode: str,
                   num_negatives: int = 10, allow_outside_root: bool = False) -> list[WorkItem]:
    """Validated FineHARD records as work items.

    `mode`: "ground" validates the record without its boxes (they are replaced), "negatives" validates boxes but
    not their old negatives (they are rewritten), "as_is" validates everything.
    """
    config = FineHardConfig(data_path=input_path, image_root=image_root, strip_prefixes=STRIP_PREFIXES,
                            max_boxes=1 << 30, num_hard_negatives=num_negatives, short_caption_prefix="",
                            on_bad_record=policy.on_bad_record, check_image_paths=image_root is not None,
                            allow_paths_outside_root=allow_outside_root)
    items: list[WorkItem] = []
    for path in resolve_data_files(input_path):
        for index, raw in read_records(path, policy):
            probe = dict(raw)
            boxes = raw.get("bbox_info")
            if mode == "ground":
                probe["bbox_info"] = []
            elif mode == "negatives" and isinstance(boxes, list):
                probe["bbox_info"] = [{**b, "flag_short_neg": 0} if isinstance(b, dict) else b for b in boxes]
            before = policy.report.skipped
            parsed = parse_finehard_record(probe, str(path), index, config, policy)
            dropped = _skip_diff(policy, before)
            f_path = raw.get("f_path") if isinstance(raw.get("f_path"), str) else ""
            if parsed is None:
                reason = next(iter(dropped), "bad_record")
                items.append(WorkItem(len(items), f_path, {}, rejected=f"input:{reason}", detail=policy.last_message))
                continue
            record = dict(raw)
            if mode != "ground":
                record["bbox_info"] = _surviving_boxes(boxes, parsed)
            items.append(WorkItem(len(items), f_path, record,
                                  counts={f"input_box:{k}": v for k, v in dropped.items()}))
    return items


def _surviving_boxes(raw_boxes: list, parsed) -> list[dict]:
    """The raw box dicts the parser kept (it keeps order and drops bad ones): greedy in-order matching."""
    kept, j = [], 0
    for box in raw_boxes:
        if j == len(parsed.short_exprs):
            break
        if (isinstance(box, dict) and box.get("short_expr") == parsed.short_exprs[j]
                and box.get("long_expr") == parsed.long_exprs[j] and _same_coords(box.get("bbox"), parsed.boxes[j])):
            kept.append(box)
            j += 1
    if j != len(parsed.short_exprs):
        raise RuntimeError("internal: could not match the validated boxes back to the raw record")
    return kept


def _same_coords(raw: object, parsed: np.ndarray) -> bool:
    try:
        return bool(np.array_equal(np.asarray(raw[:4], dtype=np.float32), parsed))
    except (TypeError, ValueError):
        return False


def load_images(items: list[WorkItem], image_root: str | None, policy: BadRecordPolicy,
                source: str, allow_outside_root: bool = False,
                max_pixels: int | None = None) -> list[Image.Image | ImageFailure]:
    """RGB images for `items`, or for an image that cannot be read, its `ImageFailure` (after `policy.reject`).

    Images are decoded by the data layer's `load_rgb` (EXIF orientation applied, transparency on white), so the
    boxes found here are in the frame training sees.
    """
    out: list[Image.Image | ImageFailure] = []
    for item in items:
        try:
            path = resolve_image_path(item.f_path, image_root, STRIP_PREFIXES, allow_outside_root)
            out.append(load_rgb(path, max_pixels))
            continue
        except PathOutsideRootError as error:
            reason, detail = BadReason.PATH_OUTSIDE_ROOT, str(error)
        except ImageTooLargeError as error:
            reason, detail = BadReason.IMAGE_TOO_LARGE, str(error)
        except FileNotFoundError:
            reason, detail = BadReason.MISSING_IMAGE, f"image not found: {path}"
        except Exception as error:  # PIL raises many types for undecodable files  # noqa: BLE001
            reason, detail = BadReason.CORRUPT_IMAGE, f"cannot decode {path}: {error}"
        policy.reject(reason, source, item.index, "f_path", detail)
        out.append(ImageFailure(reason.value, policy.last_message or detail))
    return out

