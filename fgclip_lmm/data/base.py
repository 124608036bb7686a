"""Common machinery of the map-style readers: image paths, lazy image loading with a deterministic fallback.

Image paths stay inside their root: a record's relative path is joined to `image_root` (the working directory
when none is set) and must still lie inside it after normalisation; an absolute path or a `..` escape is the bad
record `path_outside_root` unless the reader's config sets `allow_paths_outside_root: true`. The check is
lexical and happens before the file system is touched, so the message never tells whether such a file exists
(symbolic links inside the root are followed as usual, so a root assembled from links keeps working).

Records are validated eagerly when a reader is built (cheap checks: fields, boxes, negatives, captions, and
whether the image file exists). Images are decoded lazily in `__getitem__`; under `skip` a missing or corrupt
image marks the record bad in a shared bitmap (counted once, even across DataLoader workers and epochs) and the
dataset returns the next loadable index instead (i+1, i+2, ... modulo the length), so an epoch never stops.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import torch
from torch.utils.data import Dataset

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy
from fgclip_lmm.data.images import ImagePreprocessor, ImageTooLargeError
from fgclip_lmm.errors import FGClipError


class PathOutsideRootError(FGClipError, ValueError):
    """A record's image path that resolves outside its image root (absolute, or escaping with `..`)."""


class NoRecordsLeftError(FGClipError, ValueError):
    """Every record of a reader was rejected; `report` holds the bad-record report to print or write first."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


def resolve_image_path(raw: str, image_root: str | os.PathLike | None, strip_prefixes: tuple[str, ...] = (),
                       allow_outside_root: bool = False) -> Path:
    """Strip the first matching dataset prefix (e.g. FineHARD's "grit-20m/data-12m/"), then join to the root.

    Raises `PathOutsideRootError` when the result leaves the root (see the module docstring), unless allowed.
    """
    relative = raw
    for prefix in strip_prefixes:
        if prefix and relative.startswith(prefix):
            relative = relative[len(prefix) :]
            break
    relative = str(PurePosixPath(relative))
    path = Path(image_root) / relative if image_root else Path(relative)
    if not allow_outside_root:
        root = os.path.abspath(image_root or os.curdir)
        if os.path.commonpath([root, os.path.abspath(path)]) != root:
            where = f"the image root {image_root}" if image_root else "the working directory (no image_root set)"
            raise PathOutsideRootError(f"{raw!r} resolves outside {where}; set allow_paths_outside_root: true "
                                       "to read images outside the root")
    return path


def resolve_record_image(raw: str, config, policy: BadRecordPolicy, source: str, index: int,
                         field: str) -> Path | None:
    """A record's image path under `config` (image_root, strip_prefixes, allow_paths_outside_root,
    check_image_paths), or None after `policy.reject` (path_outside_root / missing_image)."""
    try:
        path = resolve_image_path(raw, config.image_root, config.strip_prefixes, config.allow_paths_outside_root)
    except PathOutsideRootError as error:
        policy.reject(BadReason.PATH_OUTSIDE_ROOT, source, index, field, str(error))
        return None
    if config.check_image_paths and not ImageRecordDataset.check_exists(path, policy, source, index, field):
        return None
    return path


class ImageRecordDataset(Dataset):
    """Base for readers whose records each name one image (or none); subclasses build `self.records`."""

    def __init__(self, preprocessor: ImagePreprocessor, policy: BadRecordPolicy):
        self.preprocessor = preprocessor
        self.policy = policy
        self.records: list = []
        self._bad: torch.Tensor | None = None

    def _finalise(self) -> None:
        """Call once `self.records` is complete: allocates the shared bad-image bitmap."""
        if not self.records:
            data = getattr(getattr(self, "config", None), "data_path", None)
            where = f" in {data}" if data is not None else ""
            raise NoRecordsLeftError(f"{type(self).__name__}: no valid records left{where}: "
                                     f"{self.policy.report.one_line()}", self.policy.report)
        self._bad = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.records)

    def _load_image(self, index: int) -> tuple[int, torch.Tensor | None]:
        """(index actually used, pixel tensor or None for an image-less record), with the skip fallback."""
        n = len(self.records)
        for step in range(n):
            candidate = (index + step) % n
            record = self.records[candidate]
            if record.image_path is None:
                return candidate, None
            if self._bad[candidate]:
                continue
            try:
                return candidate, self.preprocessor.load(record.image_path)
            except FileNotFoundError as error:
                reason, detail = BadReason.MISSING_IMAGE, f"image not found: {error.filename or record.image_path}"
            except ImageTooLargeError as error:
                reason, detail = BadReason.IMAGE_TOO_LARGE, str(error)
            except Exception as error:  # PIL raises many types for undecodable files  # noqa: BLE001
                reason, detail = BadReason.CORRUPT_IMAGE, f"cannot decode {record.image_path}: {error}"
            self._bad[candidate] = True
            self.policy.reject(reason, record.source, record.index, record.image_field, detail)
        raise RuntimeError(f"{type(self).__name__}: every one of the {n} images failed to load")

    @staticmethod
    def check_exists(path: Path, policy: BadRecordPolicy, source: str, index: int, field: str) -> bool:
        if path.is_file():
            return True
        policy.reject(BadReason.MISSING_IMAGE, source, index, field, f"image not found: {path}")
        return False


def require_text(
    record: dict,
    field: str,
    policy: BadRecordPolicy,
    source: str,
    index: int,
    label: str | None = None,
    transform: Callable[[str], str] | None = None,
) -> str | None:
    """A non-empty string field, or None after `policy.reject` (missing field / empty caption)."""
    label = label or field
    if field not in record or record[field] is None:
        policy.reject(BadReason.MISSING_FIELD, source, index, label, "field is missing")
        return None
    value = record[field]
    if not isinstance(value, str):
        policy.reject(BadReason.MISSING_FIELD, source, index, label, f"expected a string, got {type(value).__name__}")
        return None
    if not value.strip():
        policy.reject(BadReason.EMPTY_CAPTION, source, index, label, "text is empty")
        return None
    return transform(value) if transform else value
