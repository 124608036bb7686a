"""Resumable, sharded, batched execution of one datagen step, with atomic outputs.

Layout for `--out OUT.json`:

* `OUT.json.parts/meta.json`: the step name, the settings that shape the output and a fingerprint of the input
  list. A rerun with different settings or input is refused (use a new `--out` or `--overwrite`).
* `OUT.json.parts/rank{r:05d}.jsonl`: one line per finished item of rank r:
  `{"index", "f_path", "status": "ok" | "rejected", "reason", "record", "counts"}`. Lines are appended one batch at
  a time with flush + fsync, so an interruption loses at most the batch in flight; a torn last line is ignored.
* `OUT.json`: the FineHARD JSON array of the `ok` records in input order, and `OUT.stats.json`: item counts,
  rejections by reason with the first messages of each (`examples`: file, record, field) and summed per-item
  counters. Both are written to a temp file and renamed.

Sharding follows the standard launchers: `RANK` / `WORLD_SIZE` from `torchrun` or `accelerate launch` (1 process
when unset); rank r takes the items whose input index is r modulo the world size. A finished item is skipped on
any later run whatever its world size, since every part file is read. The process that finds every item done
writes `OUT.json`; otherwise `fgclip-lmm datagen merge --out OUT.json` does it once all ranks are through.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fgclip_lmm.errors import InputError


@dataclass(frozen=True)
class WorkItem:
    index: int  # position in the step's input list
    f_path: str  # the image path as written in the output record
    data: dict  # the input record (or {"f_path": ...} for raw images)
    rejected: str | None = None  # set when the input record itself was rejected; the step never sees it
    counts: dict[str, int] = field(default_factory=dict)  # input-side counters added to the item's outcome
    detail: str | None = None  # why the input record was rejected (the bad-record message: file, record, field)


@dataclass
class Outcome:
    status: str  # "ok" or "rejected"
    record: dict | None = None
    reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    detail: str | None = None  # a rejection's message (kept as an example per reason in OUT.stats.json)

    @classmethod
    def ok(cls, record: dict, counts: dict[str, int] | None = None) -> Outcome:
        return cls("ok", record, None, dict(counts or {}))

    @classmethod
    def rejected(cls, reason: str, counts: dict[str, int] | None = None, detail: str | None = None) -> Outcome:
        return cls("rejected", None, reason, dict(counts or {}), detail)


@dataclass(frozen=True)
class RunConfig:
    out: str
    batch_size: int = 8
    progress: bool = True
    overwrite: bool = False  # discard earlier progress for this --out


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """Run settings every datagen step shares (the common CLI flags); step configs extend it."""

    batch_size: int = 8
    device: str | None = None
    dtype: str = "auto"
    on_bad_record: str = "skip"
    progress: bool = True
    overwrite: bool = False
    allow_paths_outside_root: bool = False  # absolute / `..` f_path values are bad records unless true
    max_image_pixels: int | None = None  # pixel budget (None: FGCLIP_MAX_IMAGE_PIXELS or 50 MP; 0 = no limit)

    def run_config(self, out: str) -> RunConfig:
        return RunConfig(out, self.batch_size, self.progress, self.overwrite)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if world < 1 or not 0 <= rank < world:
            raise InputError(f"invalid launcher environment: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank, world)


@dataclass
class RunResult:
    processed: int  # items handled by this process in this run
    seconds: float
    merged: bool  # OUT.json written by this process
    stats: dict | None  # OUT.stats.json content when merged

    @property
    def items_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


BatchFn = Callable[[list[WorkItem]], list[Outcome]]
MAX_EXAMPLES = 3  # rejection messages kept per reason in OUT.stats.json


def lazy(factory: Callable[[], object]) -> Callable[[], object]:
    """Build the model on first use, so a rerun with nothing left to do never loads it."""
    cache: list = []

    def get():
        if not cache:
            cache.append(factory())
        return cache[0]

    return get


def parts_dir(out: str | os.PathLike) -> Path:
    return Path(f"{out}.parts")


def stats_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".stats.json")


def atomic_write_json(path: Path, value: object, indent: int | None = None) -> None:
    """Write JSON to a unique temp file beside `path`, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=indent)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fingerprint(items: Sequence[WorkItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.index}\t{item.f_path}\n".encode())
    return digest.hexdigest()


def _check_meta(parts: Path, step: str, settings: dict, items: Sequence[WorkItem]) -> None:
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they read back
    meta = {"step": step, "settings": settings, "num_items": len(items), "items_sha256": _fingerprint(items)}
    path = parts / "meta.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        for key in ("step", "num_items", "items_sha256"):
            if old.get(key) != meta[key]:
                raise InputError(f"{path}: earlier progress has {key}={old.get(key)!r}, this run {meta[key]!r}; "
                                 "the input changed: use a new --out or pass --overwrite")
        changed = sorted(k for k in set(old["settings"]) | set(settings) if old["settings"].get(k) != settings.get(k))
        if changed:
            raise InputError(f"{path}: settings {changed} differ from the earlier run's; use a new --out or "
                             "--overwrite")
        return
    atomic_write_json(path, meta, indent=2)


Location = tuple[int, int, int]  # (part file number, byte offset, byte length) of an item's progress line


def scan_progress(parts: Path, items: Sequence[WorkItem] | None = None) -> tuple[list[Path], dict[int, Location]]:
    """Where each finished item's line is, over every part file (only offsets are kept, so memory stays small).

    Torn (unparseable) lines are ignored; a line naming an item that is not in `items` raises.
    """
    files = sorted(parts.glob("rank*.jsonl"))
    where: dict[int, Location] = {}
    for number_of_file, part in enumerate(files):
        offset = 0
        with open(part, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                start, offset = offset, offset + len(raw)
                try:
                    entry = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # an append cut short by a crash: the item is simply not done
                index = entry.get("index") if isinstance(entry, dict) else None
                if not isinstance(index, int) or entry.get("status") not in ("ok", "rejected"):
                    raise InputError(f"{part} line {number}: not a progress entry (needs index and status)")
                if items is not None and (not 0 <= index < len(items) or items[index].f_path != entry.get("f_path")):
                    raise InputError(f"{part} line {number}: item {index} is {entry.get('f_path')!r} in the progress "
                                     "but not in this input; use a new --out or --overwrite")
                where[index] = (number_of_file, start, len(raw))
    return files, where


def run_step(step: str, items: Sequence[WorkItem], batch_fn: BatchFn, config: RunConfig, settings: dict,
             shard: Shard | None = None) -> RunResult:
    """Process this rank's unfinished items in batches, append their outcomes, and merge when all are done."""
    shard = shard or Shard.from_env()
    if config.batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {config.batch_size}")
    for position, item in enumerate(items):
        if item.index != position:
            raise ValueError(f"work item {position} has index {item.index}; items must be numbered 0..n-1")
    parts = parts_dir(config.out)
    if config.overwrite and shard.world_size > 1:
        raise InputError(f"--overwrite with {shard.world_size} ranks would race: delete {parts} before launching")
    if config.overwrite and parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    _check_meta(parts, step, settings, items)
    _, done = scan_progress(parts, items)
    mine = [item for item in items if item.index % shard.world_size == shard.rank]
    todo = [item for item in mine if item.index not in done]
    start = time.perf_counter()
    part_file = parts / f"rank{shard.rank:05d}.jsonl"
    _drop_torn_tail(part_file)
    with open(part_file, "a", encoding="utf-8") as handle, tqdm(
        total=len(mine), initial=len(mine) - len(todo), desc=f"{step} [rank {shard.rank}/{shard.world_size}]",
        unit="item", disable=not config.progress, position=shard.rank if shard.world_size > 1 else None,
    ) as bar:
        for begin in range(0, len(todo), config.batch_size):
            batch = todo[begin: begin + config.batch_size]
            outcomes = _run_batch(step, batch, batch_fn)
            lines = [json.dumps({"index": it.index, "f_path": it.f_path, "status": oc.status, "reason": oc.reason,
                                 "record": oc.record, "counts": oc.counts, "detail": oc.detail}, ensure_ascii=False)
                     for it, oc in zip(batch, outcomes, strict=True)]
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    if len(scan_progress(parts)[1]) < len(items):
        return RunResult(len(todo), seconds, False, None)
    return RunResult(len(todo), seconds, True, merge(config.out))


def _drop_torn_tail(part_file: Path) -> None:
    """Cut a last line left without its newline by a crash, so the next append starts on a fresh line."""
    if not part_file.is_file():
        return
    data = part_file.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(part_file, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _run_batch(step: str, batch: list[WorkItem], batch_fn: BatchFn) -> list[Outcome]:
    valid = [item for item in batch if item.rejected is None]
    results = iter(batch_fn(valid) if valid else [])
    outcomes = [Outcome.rejected(item.rejected, detail=item.detail) if item.rejected is not None
                else next(results, None) for item in batch]
    if any(oc is None for oc in outcomes) or next(results, None) is not None:
        raise RuntimeError(f"{step}: a batch of {len(valid)} items did not give {len(valid)} outcomes")
    for item, outcome in zip(batch, outcomes, strict=True):
        for key, value in item.counts.items():
            outcome.counts[key] = outcome.counts.get(key, 0) + value
    return outcomes


def merge(out: str | os.PathLike) -> dict:
    """Write OUT.json (ok records in input order) and OUT.stats.json from every rank's progress; returns the stats.

    Records are streamed from the part files one at a time, so memory does not grow with the records' size.
    """
    parts = parts_dir(out)
    meta_path = parts / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no progress for {out} (run a datagen step with --out {out} first)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    files, where = scan_progress(parts)
    missing = [i for i in range(meta["num_items"]) if i not in where]
    if missing:
        raise InputError(f"{out}: {len(missing)} of {meta['num_items']} items unfinished (first: {missing[:5]}); "
                           "rerun the step (any number of ranks) to finish them")
    counts: Counter = Counter()
    rejected: Counter = Counter()
    examples: dict[str, list[str]] = {}
    ok = 0
    path = Path(out)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with ExitStack() as stack:
        handles = [stack.enter_context(open(f, "rb")) for f in files]
        with open(tmp, "w", encoding="utf-8") as sink:
            sink.write("[")
            for index in range(meta["num_items"]):
                number, offset, length = where[index]
                handles[number].seek(offset)
                entry = json.loads(handles[number].read(length))
                counts.update(entry.get("counts") or {})
                if entry["status"] == "ok":
                    sink.write((", " if ok else "") + json.dumps(entry["record"], ensure_ascii=False))
                    ok += 1
                else:
                    rejected[entry["reason"]] += 1
                    shown = examples.setdefault(entry["reason"], [])
                    if len(shown) < MAX_EXAMPLES:
                        shown.append(entry.get("detail") or f"item {index} ({entry['f_path'] or 'no f_path'})")
            sink.write("]")
            sink.flush()
            os.fsync(sink.fileno())
    os.replace(tmp, path)
    stats = {"step": meta["step"], "items": meta["num_items"], "ok": ok, "rejected": dict(sorted(rejected.items())),
             "examples": dict(sorted(examples.items())), "counts": dict(sorted(counts.items())),
             "settings": meta["settings"]}
    atomic_write_json(stats_path(out), stats, indent=2)
    return stats
