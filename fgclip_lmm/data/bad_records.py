"""The bad-record policy shared by every reader: `on_bad_record: error | skip`.

`error` raises `BadRecordError` naming the file, the record index and the field. `skip` counts the record under
its reason and carries on; `BadRecordReport` holds the counts (plus the first few messages per reason) for the
job to print at the end of a run (and before any "nothing left" error) and to write as JSON (`write_json`).
Counts live in shared memory, so records skipped lazily inside DataLoader worker processes (corrupt images,
over-long captions) are counted in the parent's report too.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import Enum
from pathlib import Path
from typing import Literal

from fgclip_lmm.errors import FGClipError

OnBadRecord = Literal["error", "skip"]


class BadReason(str, Enum):
    """Every class of bad record the readers detect."""

    MISSING_IMAGE = "missing_image"
    PATH_OUTSIDE_ROOT = "path_outside_root"  # absolute or `..` image path, without allow_paths_outside_root
    CORRUPT_IMAGE = "corrupt_image"
    IMAGE_TOO_LARGE = "image_too_large"  # above the pixel budget (max_image_pixels, default 50 MP)
    MISSING_FIELD = "missing_field"
    BOX_OUT_OF_RANGE = "box_out_of_range"
    BOX_DEGENERATE = "box_degenerate"  # x1 > x2, y1 > y2 or zero area
    WRONG_NEGATIVE_COUNT = "wrong_negative_count"
    EMPTY_CAPTION = "empty_caption"
    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    EMPTY_FILE = "empty_file"  # a record file with no records at all (0 bytes, whitespace, `[]`)


REASONS: tuple[BadReason, ...] = tuple(BadReason)


class BadRecordError(FGClipError, ValueError):
    """A bad record under `on_bad_record: error`; the message names file, record index and field."""

    def __init__(self, reason: BadReason, source: str, index: int | None, field: str | None, detail: str):
        self.reason, self.source, self.index, self.field, self.detail = reason, source, index, field, detail
        where = source if index is None else f"{source} record {index}"
        super().__init__(
            f"{where}, field {field!r}: {detail} [{reason.value}]" if field else f"{where}: {detail} [{reason.value}]"
        )


class SharedCounts:
    """Named int64 counters in shared memory (visible across forked or spawned DataLoader workers)."""

    def __init__(self, names: tuple[str, ...]):
        import torch  # here, not at module level: command-line front-ends import this module for its errors

        self.names = names
        self._index = {name: i for i, name in enumerate(names)}
        self._values = torch.zeros(len(names), dtype=torch.int64).share_memory_()
        self._lock = multiprocessing.get_context().Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[self._index[name]] += amount

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            values = self._values.tolist()
        return {name: value for name, value in zip(self.names, values, strict=True) if value}

    def reset(self) -> None:
        with self._lock:
            self._values.zero_()


class BadRecordReport:
    """Counts of skipped records per reason, truncated texts per field, and the first messages per reason."""

    max_examples = 3

    def __init__(self, truncation_fields: tuple[str, ...] = ("long_caption", "short_caption", "box_text", "hard_text")):
        self._skipped = SharedCounts(tuple(r.value for r in REASONS))
        self._truncated = SharedCounts(truncation_fields)
        self.examples: dict[str, list[str]] = {}  # filled only in the process that saw the record

    def count_skip(self, error: BadRecordError) -> None:
        self._skipped.add(error.reason.value)
        examples = self.examples.setdefault(error.reason.value, [])
        if len(examples) < self.max_examples:
            examples.append(str(error))

    def count_truncations(self, field: str, amount: int) -> None:
        if amount:
            self._truncated.add(field, amount)

    @property
    def skipped(self) -> dict[str, int]:
        return self._skipped.as_dict()

    @property
    def truncated(self) -> dict[str, int]:
        return self._truncated.as_dict()

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        """The report as JSON-ready data: totals, counts per reason, example messages, truncations per field."""
        return {"total_skipped": self.total_skipped, "skipped": dict(sorted(self.skipped.items())),
                "examples": {k: list(v) for k, v in sorted(self.examples.items())},
                "total_truncated": sum(self.truncated.values()), "truncated": dict(sorted(self.truncated.items()))}

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def one_line(self) -> str:
        """`3 bad records skipped (missing_image 2, path_outside_root 1)`, for one-line error messages."""
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items()))
        return f"{self.total_skipped} bad records skipped" + (f" ({reasons})" if reasons else "")

    def summary(self) -> str:
        """Human-readable end-of-run report (one line per non-zero counter)."""
        lines = [f"bad records skipped: {self.total_skipped}"]
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.skipped.items())]
        for _, examples in sorted(self.examples.items()):
            lines += [f"    e.g. {example}" for example in examples]
        truncated = self.truncated
        lines.append(f"texts truncated: {sum(truncated.values())}")
        lines += [f"  {field}: {count}" for field, count in sorted(truncated.items())]
        return "\n".join(lines)


@dataclass
class BadRecordPolicy:
    """Applies `on_bad_record` and feeds the shared report. One policy per dataset (or per run)."""

    on_bad_record: OnBadRecord = "error"
    report: BadRecordReport | None = None
    last_message: str | None = dataclass_field(default=None, init=False, repr=False)  # the latest rejection

    def __post_init__(self) -> None:
        if self.on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {self.on_bad_record!r}")
        if self.report is None:
            self.report = BadRecordReport()

    def reject(self, reason: BadReason, source: str, index: int | None, field: str | None, detail: str) -> None:
        """Raise under `error`; count under `skip`. Callers drop the record after this returns."""
        error = BadRecordError(reason, str(source), index, field, detail)
        self.last_message = str(error)
        if self.on_bad_record == "error":
            raise error
        self.report.count_skip(error)
