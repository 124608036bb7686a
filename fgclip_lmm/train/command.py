"""The body of `fgclip-lmm train-clip` / `train-lmm` (and of the DeepSpeed launcher scripts) up to the training loop.

Order matters to the user: `--help`, config errors and output-dir problems are answered with the standard library
and PyYAML alone (well under 2 s); torch, transformers and DeepSpeed load only once the config is valid and the
output dir is ours (`rundir.RunLock`). A known user error (config, output dir, bad record, no usable data) prints
one line `fgclip-lmm train-clip: error: ...` (every command's format, `errors.format_error`) and exits 2; `--debug`
or FGCLIP_DEBUG=1 adds the traceback. The machine-read markers FGCLIP_TRAIN_DONE / FGCLIP_PARAM_CHECKSUM print only
under FGCLIP_TEST_MARKERS=1.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..errors import FGClipError, debug_requested, format_error
from .config_io import ConfigError, describe, load_config
from .rundir import RunDirError, RunLock, ensure_writable

MARKERS_ENV = "FGCLIP_TEST_MARKERS"
# torch re-raises an error of a DataLoader worker as RuntimeError (or its own type, if one argument builds it) with
# the worker's traceback in the message; `user_message` recognises it by this first line.
WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")


@dataclass(frozen=True)
class TrainerSpec:
    command: str      # "train-clip"
    config_cls: type  # its typed config
    kind: str         # which shipped presets `--config NAME` looks in
    task: str         # "module:Class" of its `loop.TrainTask`, imported only after the config is valid


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def marker(text: str) -> None:
    """A machine-read line (tests, debugging), only under FGCLIP_TEST_MARKERS=1; one write call, so lines of
    ranks sharing the launcher's unbuffered stdout (`python -u`) cannot interleave inside it."""
    if env_flag(MARKERS_ENV):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _expected_error_names() -> set[str]:
    names, todo = set(), [FGClipError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def user_message(error: BaseException) -> str | None:
    """The one-line message of an expected error (`errors.format_error`), also of one raised in a DataLoader worker:
    torch re-raises it in the main process as the same class or, when that class cannot be rebuilt from a message,
    as a RuntimeError; either way the text starts with "Caught <Class> in DataLoader worker" and its last line is
    "package.module.Class: message". None for a bug."""
    worker = WORKER_ERROR.match(str(error))
    if worker:
        if worker.group(1) not in _expected_error_names():
            return None
        last = [line for line in str(error).splitlines() if line.strip()][-1]
        return last.split(": ", 1)[-1].strip()
    return format_error(error)


def fail(command: str, error: BaseException, message: str, debug: bool) -> int:
    if debug:
        traceback.print_exception(error)
    print(f"fgclip-lmm {command}: error: {message}", file=sys.stderr, flush=True)
    return 2


def claim_output_dir(out: Path, rank: int) -> RunLock | None:
    """Rank 0 (the only writer of run-level files) proves `out` writable and takes its lock."""
    if rank != 0:
        return None
    ensure_writable(out)
    lock = RunLock(out)
    note = lock.acquire()
    if note:
        print(note, file=sys.stderr, flush=True)
    return lock


def run_command(spec: TrainerSpec, argv: list[str] | None) -> int:
    argv, debug = debug_requested(list(argv or []))
    rank = int(os.environ.get("RANK", "0"))
    lock = None
    try:
        if {"-h", "--help"} & set(argv):
            print(describe(spec.config_cls, spec.kind, spec.command, argv))
            return 0
        config = load_config(spec.config_cls, argv, spec.kind)
        lock = claim_output_dir(Path(config.output_dir), rank)
    except (ConfigError, RunDirError) as error:  # before any process group or model exists
        return fail(spec.command, error, user_message(error), debug)
    try:
        module, name = spec.task.split(":")
        task = getattr(importlib.import_module(module), name)(config)
        from .loop import run_training

        result = run_training(task)
    except Exception as error:
        if lock is not None:
            lock.release()
        message = user_message(error)
        if message is None:
            raise
        code = fail(spec.command, error, message, debug)
        hard_exit(code)
        return code
    if lock is not None:
        lock.release()
    if rank == 0:
        marker(f"FGCLIP_TRAIN_DONE {result.model_dir}")
    hard_exit(0)
    return 0


def hard_exit(code: int) -> None:
    """Exit without interpreter teardown once a process group exists: DeepSpeed/gloo sometimes abort at exit after
    the work is done."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
