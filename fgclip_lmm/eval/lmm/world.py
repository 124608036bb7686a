"""(Re)build the offline lmms-eval tasks from a synthetic world (`fgclip-lmm synth --out DIR`).

The world's `manifest.json` points at POPE-style parquet (`files.pope.{random,popular,adversarial}`) and MME-style
Yes/No pairs (`files.mme`, one `category` per attribute kind). This module checks both, splits the pairs by
attribute and writes a task directory (YAML + parquet) with `fgclip_lmm.eval.lmm.task_files`:

    python -m fgclip_lmm.eval.lmm.world --world runs/demo/world                 # refresh the packaged tasks
    python -m fgclip_lmm.eval.lmm.world --world DIR --out my_tasks --max-pope 60 --max-pairs 8

`eval-lmm --world DIR` does the same into `OUT/tasks` and evaluates those instead of the packaged copy. Each task
directory gets a `world.json` saying which world it was built from (`fgclip_lmm.eval.lmm.provenance`). Row
order is kept (POPE questions as generated; pairs adjacent), so `--limit` takes whole pairs when even.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from fgclip_lmm.eval.lmm.provenance import WORLD_FILE, world_record
from fgclip_lmm.eval.lmm.task_files import ATTRIBUTES, POPE_SPLITS, write_task_dir
from fgclip_lmm.eval.lmm.tasks_dir import (
    PAIR_COLUMNS,
    POPE_COLUMNS,
    SYNTHETIC_DIR,
    TaskDataError,
    check_rows,
)

# The world's attribute kinds -> our task suffixes (American "color" as in MME).
KIND_TO_ATTRIBUTE = {"colour": "color", "color": "color", "shape": "shape", "size": "size", "position": "position",
                     "count": "count", "existence": "existence"}


def _read(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise TaskDataError(f"{what}: {path} does not exist")
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:
        raise TaskDataError(f"{what}: {path} is not a readable parquet file ({exc})") from exc


def world_task_rows(world: Path) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """POPE rows per split and pair rows per attribute, read through the world's manifest and checked."""
    from fgclip_lmm.data.synth.manifest import load_manifest

    try:
        manifest = load_manifest(world)
        pope_paths = {split: manifest.path("pope", split) for split in POPE_SPLITS}
        mme_path = manifest.path("mme")
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise TaskDataError(f"world {world}: {exc}") from exc
    pope = {}
    for split, path in pope_paths.items():
        rows = _read(path, f"POPE {split}")
        check_rows(rows, f"world POPE {split} ({path.name})", POPE_COLUMNS, pairs=False)
        pope[split] = rows
    mme = _read(mme_path, "MME pairs")
    check_rows(mme, f"world MME pairs ({mme_path.name})", PAIR_COLUMNS, pairs=True)
    attrs: dict[str, list[dict]] = {}
    for row in mme:
        attribute = KIND_TO_ATTRIBUTE.get(str(row["category"]))
        if attribute is None:
            raise TaskDataError(f"world MME pairs: unknown category {row['category']!r}; known: "
                                f"{sorted(KIND_TO_ATTRIBUTE)}")
        attrs.setdefault(attribute, []).append({**row, "category": attribute})
    return pope, {a: attrs[a] for a in ATTRIBUTES if a in attrs}


def _first_images(rows: list[dict], n_images: int | None) -> list[dict]:
    """Rows of the first `n_images` distinct images (keeps every question about a kept image)."""
    if n_images is None:
        return rows
    kept: list[str] = []
    out = []
    for row in rows:
        source = str(row.get("image_source") or row["question_id"])
        if source not in kept:
            if len(kept) == n_images:
                continue
            kept.append(source)
        out.append(row)
    return out


def build_tasks_from_world(world: str | Path, out: str | Path = SYNTHETIC_DIR, max_pope_images: int | None = None,
                           max_pairs: int | None = None) -> list[str]:
    """Write the fgclip_pope_* / fgclip_attr_* tasks for `world` into `out`; returns the task names."""
    pope, attrs = world_task_rows(Path(world))
    pope = {split: _first_images(rows, max_pope_images) for split, rows in pope.items()}
    if max_pairs is not None:
        attrs = {a: rows[: 2 * max_pairs] for a, rows in attrs.items()}
    out = Path(out)
    for stale in list(out.glob("fgclip_*.yaml")) + list(out.glob("data/*.parquet")):
        stale.unlink()
    names = write_task_dir(out, pope, attrs)
    manifest = json.loads((Path(world) / "manifest.json").read_text())
    record = world_record(Path(world), manifest, max_pope_images, max_pairs)
    (out / WORLD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fgclip_lmm.eval.lmm.world", description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, type=Path, help="synthetic world directory (has manifest.json)")
    p.add_argument("--out", type=Path, default=SYNTHETIC_DIR, help="task directory (default: the packaged one)")
    p.add_argument("--max-pope", type=int, default=None, help="keep the questions of the first N images per split")
    p.add_argument("--max-pairs", type=int, default=None, help="keep the first N Yes/No pairs per attribute")
    args = p.parse_args(argv)
    try:
        names = build_tasks_from_world(args.world, args.out, args.max_pope, args.max_pairs)
    except TaskDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} tasks to {args.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
