"""Where an `eval-lmm` run's offline tasks come from, and the same run as a command of lmms-eval's own CLI.

* `WORLD_FILE` (`world.json`) sits in every synthetic task directory: `build_tasks_from_world` writes it (the
  world's path, seed, size and the `fgclip-lmm synth` command that regenerates it), and the packaged copy ships
  one. `world_line` turns it into the sentence eval-lmm prints and reports, so a run without `--world` says that
  it scored the packaged world, not the user's.
* `lmms_eval_commands`: lmms-eval 0.7.3 finds plugin *models* through the `lmms_eval.models` entry point, but has no
  working plugin mechanism for *tasks* (its `LMMS_EVAL_PLUGINS` variable adds the package's task path only after
  the task index is built), so our tasks need `--include_path`. eval-lmm prints and records the lmms-eval
  command(s) that run the same evaluation, include path included: one per task directory, since `--include_path`
  takes one path.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fgclip_lmm.eval.lmm.tasks_dir import local_group_names, local_task_yamls

WORLD_FILE = "world.json"


def world_record(world: Path, manifest: dict[str, Any], max_pope_images: int | None, max_pairs: int | None) -> dict:
    """The `world.json` of a task directory built from `world` (missing manifest keys stay None)."""
    seed, images, size = manifest.get("seed"), manifest.get("num_images"), manifest.get("image_size")
    synth = None if None in (seed, images, size) else f"fgclip-lmm synth --images {images} --seed {seed} --size {size}"
    return {"world": str(world.resolve()), "seed": seed, "num_images": images, "image_size": size, "synth": synth,
            "max_pope_images": max_pope_images, "max_pairs": max_pairs}


def read_world_record(task_dir: Path) -> dict[str, Any] | None:
    path = Path(task_dir) / WORLD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def world_line(task_dir: Path, packaged: bool) -> str:
    """"synthetic tasks from ..." for the console header and the report."""
    record = read_world_record(task_dir)
    if record is None:
        origin = f"an unrecorded world ({task_dir} has no {WORLD_FILE})"
    else:
        origin = record.get("synth") or "a world"
        if not packaged:
            origin = f"world {record['world']} ({origin})"
    if packaged:
        return (f"synthetic tasks from the packaged world ({origin}, copy in {task_dir}), not yours: "
                "pass --world DIR to build them from your world")
    return f"synthetic tasks from {origin}, built into {task_dir}"


def _dir_of(name: str, task_dirs: Sequence[Path]) -> Path | None:
    for task_dir in task_dirs:
        if name in local_task_yamls([task_dir]) or name in local_group_names([task_dir]):
            return Path(task_dir)
    return None


def lmms_eval_commands(model: str, names: Sequence[str], task_dirs: Sequence[Path], model_args: dict[str, Any],
                       batch_size: int, limit: int | None, seed: int, output_path: Path) -> list[str]:
    """The `lmms-eval` command line(s) equivalent to an eval-lmm run, grouped by the task directory they need."""
    by_dir: dict[Path | None, list[str]] = {}
    for name in names:
        by_dir.setdefault(_dir_of(name, task_dirs), []).append(name)
    args = ",".join(f"{k}={v}" for k, v in {"pretrained": model, **model_args}.items() if v is not None)
    commands = []
    for task_dir, tasks in by_dir.items():
        parts = ["lmms-eval", "--model", "fgclip_llava", "--model_args", args, "--tasks", ",".join(tasks),
                 "--batch_size", str(batch_size), "--seed", f"{seed},{seed},{seed}"]
        if task_dir is not None:
            parts += ["--include_path", str(task_dir)]
        if limit is not None:
            parts += ["--limit", str(limit)]
        parts += ["--output_path", str(output_path), "--log_samples"]
        commands.append(shlex.join(parts))
    return commands
