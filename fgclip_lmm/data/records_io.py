"""Record files shared by every reader: locating files, parsing JSON / JSONL / parquet, streaming via `datasets`.

`resolve_data_files` accepts a file, a `.txt` list of files (one per line, relative to the list) or a directory
(globbed for `*.json`, `*.jsonl`, `*.parquet`, sorted). `read_records` yields `(index, record)` per file:
a whole-file JSON array is tried first (FineHARD's files are arrays even when named `.jsonl`), then true JSONL
line by line; parquet rows come from pyarrow. Broken UTF-8 or JSON goes through the bad-record policy: per
line for JSONL (the line is the record), for the whole file otherwise (nothing in it can be trusted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from fgclip_lmm.data.bad_records import BadReason, BadRecordPolicy

RECORD_SUFFIXES = (".json", ".jsonl", ".parquet")


def resolve_data_files(data_path: str | os.PathLike | list) -> list[Path]:
    """Expand a data path (file, `.txt` list, directory, or a list of those) into an ordered list of files."""
    if isinstance(data_path, (list, tuple)):
        return [f for item in data_path for f in resolve_data_files(item)]
    path = Path(data_path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in RECORD_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"{path}: directory holds no *.json, *.jsonl or *.parquet files")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file or directory")
    if path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        if not entries:
            raise ValueError(f"{path}: file list is empty")
        return [f for entry in entries for f in resolve_data_files(path.parent / entry)]
    if path.suffix not in RECORD_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported data file type {path.suffix!r} (expected {', '.join(RECORD_SUFFIXES)} or .txt)"
        )
    return [path]


def read_records(path: Path, policy: BadRecordPolicy) -> Iterator[tuple[int, dict]]:
    """Yield `(index_in_file, record)`; non-object records and undecodable data go through `policy`."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for index, record in enumerate(pq.read_table(path).to_pylist()):
            yield index, record
        return
    raw = path.read_bytes()
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
    """Parse the whole file as one JSON value; None when it is not one (then it may be JSONL)."""
    stripped = raw.lstrip()
    if not stripped.startswith(b"["):
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        policy.reject(BadReason.INVALID_UTF8, path, None, None, f"not UTF-8 at byte {error.start}; whole file dropped")
        return []
    except json.JSONDecodeError as error:
        policy.reject(BadReason.INVALID_JSON, path, None, None, f"{error}; whole JSON array dropped")
        return []
    return list(enumerate(value))


def _json_lines(path: Path, raw: bytes, policy: BadRecordPolicy) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    index = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            out.append((index, json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as error:
            policy.reject(BadReason.INVALID_UTF8, path, index, None, f"line is not UTF-8 at byte {error.start}")
        except json.JSONDecodeError as error:
            policy.reject(BadReason.INVALID_JSON, path, index, None, str(error))
        index += 1
    return out


def stream_records(files: list[Path]):
    """A `datasets` streaming dataset over `files` (all JSON/JSONL or all parquet), for shards too large to load.

    Returns a `datasets.IterableDataset` of raw records; readers validate each one as it arrives.
    """
    import datasets

    kinds = {"parquet" if f.suffix == ".parquet" else "json" for f in files}
    if len(kinds) != 1:
        raise ValueError(f"cannot stream a mix of parquet and JSON files: {sorted(map(str, files))[:4]} ...")
    return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train", streaming=True)
