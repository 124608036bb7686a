"""The offline task directories: where they live, name resolution, and data checks before evaluation.

Packaged layout (`fgclip_lmm/eval/lmm/tasks/`, pass it to lmms-eval as `--include_path`):
* `synthetic/`: `fgclip_pope_*` and `fgclip_attr_*` YAMLs + `data/*.parquet`, built from the world of
  `fgclip-lmm synth --out DIR --images 200 --seed 0 --size 64` (66 POPE questions per split on 11 test images,
  20 Yes/No pairs per attribute); rebuild with `python -m fgclip_lmm.eval.lmm.world --world DIR`;
* `hub/`: `fgclip_hallusion_bench_image`, HallusionBench from the hub scored with the rule-based aggregators.

`check_task_data` reads every parquet an offline task points at and fails with the file, row and field on a
wrong schema, a non yes/no answer, a broken MME pair or an image that does not decode, before any model runs.
"""
from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from fgclip_lmm.errors import FGClipError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
SYNTHETIC_DIR = TASKS_DIR / "synthetic"
HUB_DIR = TASKS_DIR / "hub"
# Built-in task names that eval-lmm runs through a packaged copy (GPT-judge aggregators -> rule-based ones).
TASK_ALIASES = {"hallusion_bench_image": "fgclip_hallusion_bench_image"}
POPE_COLUMNS = ("question_id", "question", "answer", "image")
PAIR_COLUMNS = ("question_id", "question", "answer", "category", "image")


class TaskDataError(FGClipError, ValueError):
    """An offline task's data file is missing or not in the expected format."""


class _TaskYamlLoader(yaml.SafeLoader):
    """Reads lmms-eval task YAMLs, keeping `!function a.b.c` as the plain string "a.b.c"."""


_TaskYamlLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def read_task_yaml(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_TaskYamlLoader) or {}


def local_task_yamls(dirs: Iterable[Path]) -> dict[str, Path]:
    """task name -> YAML path for every task (not group) defined under `dirs`."""
    found: dict[str, Path] = {}
    for root in dirs:
        for path in sorted(Path(root).rglob("*.yaml")):
            config = read_task_yaml(path)
            if isinstance(config.get("task"), str):
                found[config["task"]] = path
    return found


def local_group_names(dirs: Iterable[Path]) -> set[str]:
    """Group names defined under `dirs`."""
    names = set()
    for root in dirs:
        for path in Path(root).rglob("*.yaml"):
            group = read_task_yaml(path).get("group")
            if isinstance(group, str):
                names.add(group)
    return names


def suggest(name: str, known: Sequence[str], n: int = 5) -> list[str]:
    """Close known names for a misspelt task name."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)


def _data_files(config: dict[str, Any], yaml_path: Path) -> list[Path]:
    files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
    values = files.values() if isinstance(files, dict) else files if isinstance(files, list) else [files]
    out = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            path = Path(item)
            out.append(path if path.is_absolute() else yaml_path.parent / path)
    return out


def _check_image(value: Any, where: str) -> None:
    from fgclip_lmm.data.images import (
        load_rgb,  # the loader the plugin decodes with (imports torch: lazily)
    )

    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    else:
        data, path = (value, None) if isinstance(value, bytes) else (None, value)
    try:
        if data is not None:
            load_rgb(bytes(data))
        elif path:
            load_rgb(path)
        else:
            raise ValueError("no bytes and no path")
    except Exception as exc:  # PIL raises many types for corrupt data
        raise TaskDataError(f"{where}: image does not load ({type(exc).__name__}: {exc})") from exc


def _yes_no(value: Any) -> str | None:
    text = str(value).strip().lower().rstrip(".")
    return text if text in ("yes", "no") else None


def check_rows(rows: list[dict[str, Any]], where: str, columns: Sequence[str], pairs: bool) -> None:
    """Schema, answers, images and (for MME-style data) complete adjacent Yes/No pairs."""
    if not rows:
        raise TaskDataError(f"{where}: no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise TaskDataError(f"{where}: missing column(s) {missing}; expected {list(columns)}, found {sorted(rows[0])}")
    for i, row in enumerate(rows):
        if _yes_no(row["answer"]) is None:
            raise TaskDataError(f"{where} row {i}: answer {row['answer']!r} is not yes/no")
        if not str(row["question"]).strip():
            raise TaskDataError(f"{where} row {i}: empty question")
        _check_image(row["image"], f"{where} row {i}")
    if pairs:
        counts = Counter(row["question_id"] for row in rows)
        bad = [qid for qid, n in counts.items() if n != 2]
        if bad:
            raise TaskDataError(f"{where}: question_id {bad[0]!r} has {counts[bad[0]]} rows; MME pairs need exactly 2")
        for i in range(0, len(rows), 2):
            a, b = rows[i], rows[i + 1]
            if a["question_id"] != b["question_id"] or {_yes_no(a["answer"]), _yes_no(b["answer"])} != {"yes", "no"}:
                raise TaskDataError(f"{where} rows {i}-{i + 1}: not an adjacent Yes/No pair of one question_id")


def check_task_data(task: str, yaml_path: Path) -> int:
    """Validate the parquet data of one offline task; returns its number of rows."""
    config = read_task_yaml(yaml_path)
    if config.get("dataset_path") != "parquet":
        return 0  # hub-backed task: lmms-eval downloads and checks it
    files = _data_files(config, yaml_path)
    if not files:
        raise TaskDataError(f"{yaml_path}: dataset_path is parquet but no data_files are given")
    scorer = str(config.get("process_results"))
    pairs = "attr_process_results" in scorer or "mme_process_results" in scorer
    yes_no = pairs or "pope_process_results" in scorer
    total = 0
    for path in files:
        if not path.is_file():
            raise TaskDataError(f"task {task}: data file {path} does not exist")
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:
            raise TaskDataError(f"task {task}: {path} is not a readable parquet file ({exc})") from exc
        if not rows:
            raise TaskDataError(f"task {task}: {path} has no rows")
        if yes_no:
            check_rows(rows, f"task {task}: {path.name}", PAIR_COLUMNS if pairs else POPE_COLUMNS, pairs)
        total += len(rows)
    return total
