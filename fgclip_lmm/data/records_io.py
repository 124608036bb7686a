"""Record files shared by every reader: locating files, parsing JSON / JSONL / parquet, streaming via `datasets`.

`resolve_data_files` accepts a file, a `.txt` list of files (one per line, relative to the list) or a directory
(globbed for `*.json`, `*.jsonl`, `*.parquet`, any letter case, sorted); a file reached twice is read once, with
a warning. `read_records` yields `(index, record)` per file: a whole-file JSON array is tried first (FineHARD's
files are arrays even when named `.jsonl`), then true JSONL line by line; parquet rows come from pyarrow. Text is
decoded as `utf-8-sig` (a byte-order mark is ignored).

File-level mistakes are reported once per file, naming it, through the bad-record policy: a file with no records
(`empty_file`), a top-level JSON value that is neither an array nor JSONL (a pretty-printed object, a number:
`invalid_json`), broken UTF-8 or JSON in an array (the whole file is dropped: nothing in it can be trusted). In
true JSONL the line is the record, so a bad line is one bad record.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from pathlib import Path

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy
from fgclip_lmm.errors import InputError, warn

RECORD_SUFFIXES = (".json", ".jsonl", ".parquet")
NOT_RECORDS = "top-level JSON must be an array of records or JSONL"
JSON_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def resolve_data_files(data_path: str | os.PathLike | list) -> list[Path]:
    """Expand a data path (file, `.txt` list, directory, or a list of those) into an ordered list of files.

    A file reached more than once (listed twice, or by two entries) is kept at its first place, with a warning.
    """
    files, seen = [], set()
    for path in _expand(data_path):
        key = os.path.realpath(path)
        if key in seen:
            warn(f"{path}: listed more than once in the data path; read once")
            continue
        seen.add(key)
        files.append(path)
    return files


def _expand(data_path: str | os.PathLike | list) -> list[Path]:
    if isinstance(data_path, (list, tuple)):
        return [f for item in data_path for f in _expand(item)]
    path = Path(data_path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if _suffix(p) in RECORD_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"{path}: directory holds no *.json, *.jsonl or *.parquet files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file or directory")
    if _suffix(path) == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        if not entries:
            raise InputError(f"{path}: file list is empty")
        return [f for entry in entries for f in _expand(path.parent / entry)]
    if _suffix(path) not in RECORD_SUFFIXES:
        raise InputError(
            f"{path}: unsupported data file type {path.suffix!r} (expected {', '.join(RECORD_SUFFIXES)} or .txt)"
        )
    return [path]


def read_records(path: Path, policy: BadRecordPolicy) -> Iterator[tuple[int, dict]]:
    """Yield `(index_in_file, record)`; non-object records and undecodable data go through `policy`."""
    if _suffix(path) == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        if not rows:
            policy.reject(BadReason.EMPTY_FILE, path, None, None, "the file holds no records")
        yield from enumerate(rows)
        return
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if not raw.strip():
        policy.reject(BadReason.EMPTY_FILE, path, None, None, "the file is empty")
        return
    records = _json_array(path, raw, policy)
    if records is None:
        records = _json_lines(path, raw, policy)
    for index, record in records:
        if isinstance(record, dict):
            yield index, record
        else:
            policy.reject(
                BadReason.INVALID_JSON, path, index, None, f"expected a JSON object, got {type(record).__name__}"
            )


def _json_array(path: Path, raw: bytes, policy: BadRecordPolicy) -> list[tuple[int, object]] | None:
    """Parse the whole file as one JSON value; None when it is JSONL instead ([] after a file-level rejection)."""
    stripped = raw.lstrip()
    if not stripped.startswith(b"["):
        return _not_an_array(path, raw, stripped, policy)
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        policy.reject(BadReason.INVALID_UTF8, path, None, None, f"not UTF-8 at byte {error.start}; whole file dropped")
        return []
    except json.JSONDecodeError as error:
        policy.reject(BadReason.INVALID_JSON, path, None, None, f"{error}; whole JSON array dropped")
        return []
    if not value:
        policy.reject(BadReason.EMPTY_FILE, path, None, None, "the JSON array holds no records")
        return []
    return list(enumerate(value))


def _not_an_array(path: Path, raw: bytes, stripped: bytes, policy: BadRecordPolicy) -> list[tuple[int, object]] | None:
    """A file that does not start with `[`: JSONL (None), or one JSON value that is not a record list ([])."""
    try:
        if isinstance(json.loads(stripped.split(b"\n", 1)[0].decode("utf-8")), dict):
            return None  # the first line is a whole record: JSONL (the common case, decided without a full parse)
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    try:
        text = raw.decode("utf-8")
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # broken text: read line by line (and reported once if no line is a record)
    lines = sum(1 for line in text.splitlines() if line.strip())
    if isinstance(value, dict) and lines == 1:
        return None  # a one-record JSONL file
    kind = JSON_KINDS.get(type(value), type(value).__name__)
    shape = f"a JSON {kind}" + (f" spanning {lines} lines" if lines > 1 else "")
    policy.reject(BadReason.INVALID_JSON, path, None, None, f"{NOT_RECORDS} (got {shape}); whole file dropped")
    return []


def _json_lines(path: Path, raw: bytes, policy: BadRecordPolicy) -> list[tuple[int, object]]:
    parsed: list[tuple[int, object]] = []
    failures: list[tuple[BadReason, int, str]] = []
    index = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            parsed.append((index, json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as error:
            failures.append((BadReason.INVALID_UTF8, index, f"line is not UTF-8 at byte {error.start}"))
        except json.JSONDecodeError as error:
            failures.append((BadReason.INVALID_JSON, index, str(error)))
        index += 1
    if index > 1 and not any(isinstance(value, dict) for _, value in parsed):
        # not one line is a record: this is not JSONL (e.g. a pretty-printed object), one error for the file
        policy.reject(BadReason.INVALID_JSON, path, None, None,
                      f"{NOT_RECORDS} (no line of the file is a JSON object); whole file dropped")
        return []
    for reason, line_index, detail in failures:
        policy.reject(reason, path, line_index, None, detail)
    return parsed


def stream_records(files: list[Path]):
    """A `datasets` streaming dataset over `files` (all JSON/JSONL or all parquet), for shards too large to load.

    Returns a `datasets.IterableDataset` of raw records; readers validate each one as it arrives.
    """
    import datasets

    kinds = {"parquet" if _suffix(f) == ".parquet" else "json" for f in files}
    if len(kinds) != 1:
        raise InputError(f"cannot stream a mix of parquet and JSON files: {sorted(map(str, files))[:4]} ...")
    return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train", streaming=True)
