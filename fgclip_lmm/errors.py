"""The project's expected errors and the one-line report every command prints for them.

`FGClipError` is the base of every error the toolkit raises on purpose for bad input: bad records, configs,
unusable checkpoints, command-line values, data files. A command that fails with one of them (or with a
missing / unwritable file, or a checkpoint error raised inside transformers / safetensors / torch) prints one
line naming the file, record and field, and exits 2; anything else is a bug and keeps its traceback.
`--debug` or `FGCLIP_DEBUG=1` prints the traceback for expected errors too.

`run_command(name, body)` is that policy; the `fgclip-lmm` dispatcher wraps every subcommand in it, and the
launcher entry points (`deepspeed train_clip/train.py ...`) call it themselves. `checkpoint_errors(source)`
turns the foreign errors of a checkpoint load into a `CheckpointError` that names the checkpoint and, where it
can be found, the weight file. Nothing heavy is imported here: the module is loaded by every command.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

DEBUG_ENV = "FGCLIP_DEBUG"
DEBUG_FLAG = "--debug"
EXIT_BAD_INPUT = 2
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class FGClipError(Exception):
    """An expected failure caused by the input (data, config, checkpoint, command line), not by a bug."""


class InputError(FGClipError, ValueError):
    """A command-line value, option combination or input file state that cannot be used."""


class CheckpointError(FGClipError, ValueError):
    """A checkpoint that is missing, invalid, truncated, unsafe to load, or unreachable while offline."""


def require_writable_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create `path` if needed and prove it is writable (a temp file is made and removed) before any work starts,
    so a long job cannot end by failing to save its results."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fgclip_write_check_"):
            pass
    except OSError as error:
        raise InputError(f"{option} {path}: not a writable directory ({error.strerror or error})") from error
    return path


def debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    """`argv` without `--debug`, and whether tracebacks were asked for (the flag or FGCLIP_DEBUG=1)."""
    rest = [arg for arg in argv if arg != DEBUG_FLAG]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return rest, env or len(rest) != len(argv)


def warn(message: str) -> None:
    """A non-fatal problem the user should see (stderr, one line)."""
    print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _weight_file_in_traceback(exc: BaseException) -> str | None:
    """The weight file a failed load was reading: the innermost frame holding a path to an existing
    `*.safetensors` / `*.bin` / ... file (transformers and torch do not name it in their messages)."""
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, (str, os.PathLike)):
                text = os.fspath(value)
                if isinstance(text, str) and text.endswith(WEIGHT_SUFFIXES) and os.path.isfile(text):
                    return text
    return None


def _pickle_detail(message: str) -> str:
    """What the weights-only unpickler refused, without torch's advice to disable it."""
    match = re.search(r"(?:Unsupported global|unsupported GLOBAL):?\s*(?:GLOBAL\s+)?([\w.]+[\w])", message)
    return f"it references {match.group(1)}" if match else "it is not a plain tensor pickle"


def describe_checkpoint_failure(exc: BaseException, source: str | None = None) -> str | None:
    """One line for a foreign error raised while loading a checkpoint, or None when `exc` is not one.

    Pickle refusals never suggest `weights_only=False`: such a file can run arbitrary code when loaded.
    """
    kind, module, message = type(exc).__name__, type(exc).__module__, str(exc)
    file = _weight_file_in_traceback(exc) or source
    where = f"{file}" if file else "checkpoint"
    if kind == "SafetensorError" or (module.startswith("safetensors") and "Error" in kind):
        return f"{where}: not a valid safetensors file (truncated or corrupt: {one_line(message)})"
    if kind == "UnpicklingError" or "Weights only load failed" in message:
        return (f"{where}: refused to load a pickle checkpoint that needs code execution ({_pickle_detail(message)}); "
                "a pickle can run arbitrary code when loaded: use a safetensors checkpoint instead")
    if "PytorchStreamReader" in message or (kind == "EOFError" and file):
        return f"{where}: not a valid PyTorch checkpoint (truncated or corrupt: {one_line(message)[:200]})"
    hub_error = module.startswith("huggingface_hub") and kind in (
        "LocalEntryNotFoundError", "OfflineModeIsEnabled", "RepositoryNotFoundError", "HFValidationError",
        "RevisionNotFoundError", "GatedRepoError", "EntryNotFoundError")
    transformers_hub = isinstance(exc, OSError) and not getattr(exc, "filename", None) and (
        "huggingface.co" in message or "is not a local folder" in message or "Repo id must be" in message)
    if hub_error or transformers_hub:
        name = source or "the checkpoint"
        if source and (Path(source).expanduser().exists() or source.startswith((".", "/", "~"))):
            return f"{name}: not a checkpoint directory with the expected files ({one_line(message)[:200]})"
        if _hub_offline():
            return (f"{name}: not a local directory, and not in the Hugging Face cache while the hub is offline "
                    "(HF_HUB_OFFLINE=1): pass a local checkpoint directory or download it first")
        return f"{name}: could not be fetched from the Hugging Face hub ({one_line(message)[:200]})"
    return None


@contextmanager
def checkpoint_errors(source: str | os.PathLike) -> Iterator[None]:
    """Re-raise a foreign checkpoint-load error (safetensors, pickle, hub) as a one-line `CheckpointError`."""
    try:
        yield
    except FGClipError:
        raise
    except Exception as exc:  # noqa: BLE001 - only the failures describe_checkpoint_failure knows are translated
        message = describe_checkpoint_failure(exc, os.fspath(source))
        if message is None:
            raise
        raise CheckpointError(message) from exc


def format_error(exc: BaseException) -> str | None:
    """The one-line message for an expected error, or None for anything that should keep its traceback."""
    if isinstance(exc, FGClipError):
        return one_line(str(exc))
    foreign = describe_checkpoint_failure(exc)
    if foreign is not None:
        return foreign
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return one_line(str(exc))
    return None


def report_error(command: str, exc: BaseException, debug: bool) -> int | None:
    """Print the one line for an expected error (and the traceback under --debug); None for a bug."""
    message = format_error(exc)
    if message is None:
        return None
    if debug:
        traceback.print_exception(exc)
    print(f"fgclip-lmm {command}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def run_command(command: str, body: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run `body(argv without --debug)`; expected errors become one line and exit status 2."""
    argv, debug = debug_requested(list(argv))
    try:
        return int(body(argv) or 0)
    except Exception as exc:  # noqa: BLE001 - report_error re-raises everything that is not an expected error
        code = report_error(command, exc, debug)
        if code is None:
            raise
        return code
