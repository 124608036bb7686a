"""Atomic checkpoints and `--resume auto`.

Every checkpoint is written into a hidden temporary directory and renamed into place only when complete (a rename
is atomic on one filesystem), then marked with a `COMPLETE` file; `latest_complete` ignores anything else, so a
run killed mid-write resumes from the previous checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .common_config import COMPLETE
from .config_io import ConfigError


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def staging_dir(final: Path) -> Path:
    return final.parent / f".tmp-{final.name}"


def publish(staging: Path, final: Path, meta: dict) -> None:
    """Mark `staging` complete and atomically move it to `final` (replacing an older copy)."""
    (staging / COMPLETE).write_text(json.dumps(meta))
    if final.exists():
        old = final.parent / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def latest_complete(root: Path) -> Path | None:
    done = [p for p in root.glob("step_*") if (p / COMPLETE).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def resolve_resume(resume: str, root: Path) -> Path | None:
    """'' -> None; 'auto' -> newest complete checkpoint under root (or None); else an explicit complete dir."""
    if not resume:
        return None
    if resume == "auto":
        return latest_complete(root)
    path = Path(resume)
    if not (path / COMPLETE).is_file():
        raise ConfigError(f"config key 'resume': {resume} is not a complete checkpoint (no {COMPLETE} marker)")
    return path


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_engine_checkpoint(engine, root: Path, step: int, sampler_state: dict, rank: int, keep: int,
                           export=None) -> Path:
    """DeepSpeed state + sampler position + per-rank RNG into a staging dir, published atomically by rank 0.

    `export(staging)` runs on every rank before publishing (ZeRO-3 gathers weights collectively)."""
    import torch.distributed as dist

    final = step_dir(root, step)
    staging = staging_dir(final)
    engine.save_checkpoint(str(staging), tag="ds", client_state={"step": step, "sampler": sampler_state},
                           save_latest=False)
    save_rng(staging, rank)
    if export is not None:
        export(staging)
    dist.barrier()
    if rank == 0:
        publish(staging, final, {"step": step})
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def resume_engine(engine, path: Path, sampler, rank: int) -> int:
    """Restore what `save_engine_checkpoint` wrote; returns the step to continue from."""
    _, client = engine.load_checkpoint(str(path), tag="ds")
    sampler.load_state_dict(client["sampler"])
    set_rng_state(load_rng(path, rank))
    return int(client["step"])


def clean_stale(root: Path) -> None:
    """Remove half-written staging dirs left by a killed run (only the holder of the output dir's lock calls it)."""
    for p in root.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_rng(directory: Path, rank: int) -> None:
    """Per-rank RNG states as JSON (not pickle): python, numpy and torch generators."""
    state = rng_state()
    as_json = {"python": [state["python"][0], list(state["python"][1]), state["python"][2]],
               "numpy": [state["numpy"][0], state["numpy"][1].tolist(), *state["numpy"][2:]],
               "torch": state["torch"].tolist(), "cuda": [s.tolist() for s in state["cuda"]]}
    (directory / f"rng_rank{rank}.json").write_text(json.dumps(as_json))


def load_rng(directory: Path, rank: int) -> dict:
    raw = json.loads((directory / f"rng_rank{rank}.json").read_text())
    return {"python": (raw["python"][0], tuple(raw["python"][1]), raw["python"][2]),
            "numpy": (raw["numpy"][0], np.array(raw["numpy"][1], dtype=np.uint32), *raw["numpy"][2:]),
            "torch": torch.tensor(raw["torch"], dtype=torch.uint8),
            "cuda": [torch.tensor(s, dtype=torch.uint8) for s in raw["cuda"]]}
