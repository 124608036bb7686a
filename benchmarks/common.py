"""Shared helpers of the benchmark scripts: device and timing, interleaved A/B medians, peak memory, tables, JSON.

Every benchmark script imports this module first (it puts the repository root on `sys.path`, so the scripts run
as `python benchmarks/<name>.py` without an install). Timing rules, used by every script:

* one timed call = the wall time of `fn()` on CPU, or the time between two CUDA events around it on a GPU
  (the end event is synchronised, so asynchronous kernels are inside the measurement); with `--clock thread` on a
  CPU, the CPU time of the calling thread instead (`time.thread_time`: with one torch thread all compute runs
  there, and time spent waiting for a core that other jobs hold is left out, so a loaded shared machine
  perturbs the ratios much less; work in other threads or processes would be missed);
* `interleaved` alternates A, B, B, A, ... so slow drift of a shared machine hits both sides alike, and callers
  report medians and ratios of medians measured in the same run, never single absolute numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Imported after the sys.path line above, so the scripts run from a checkout without an install.
import torch  # noqa: E402
from typing_extensions import Self  # noqa: E402

from fgclip_lmm.devices import pick_device  # noqa: E402  (the package's one device picker; setup and gpu_all use it)

# ----------------------------------------------------------------------------------------------- device / timing
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}  # the benchmarks' --dtype names -> `fgclip_lmm.devices` names


def precision_dtype(name: str) -> torch.dtype:
    """`fp32` / `bf16` -> the torch dtype (through the package's one dtype table)."""
    from fgclip_lmm.devices import torch_dtype

    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)}")
    return torch_dtype(PRECISIONS[name])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = "wall"  # or "thread" (CPU only): set by `setup` from --clock


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds taken by one `fn()` (CUDA events on a GPU; on a CPU perf_counter, or thread CPU time)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    clock = time.thread_time if CLOCK == "thread" else time.perf_counter
    begin = clock()
    fn()
    return clock() - begin


def measure(fn: Callable[[], Any], device: torch.device, warmup: int = 1, repeats: int = 3) -> list[float]:
    """`warmup` untimed calls, then `repeats` timed ones (seconds each)."""
    for _ in range(warmup):
        fn()
    sync(device)
    return [time_call(fn, device) for _ in range(repeats)]


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int = 1,
                repeats: int = 3) -> dict[str, list[float]]:
    """Time several variants in alternating order (ABBA...); returns every variant's per-call seconds."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(time_call(fns[name], device))
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


# ----------------------------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of the code inside the `with` block.

    GPU: `torch.cuda.max_memory_allocated` after a reset (bytes held by tensors). CPU: the process RSS sampled
    every `interval` seconds by a background thread; `peak` is the highest RSS seen and `delta` its rise over the
    RSS at entry (the block's own footprint, model and optimizer state included if built inside).
    """

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device, self.interval = device, interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = self.peak = _rss_bytes()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def delta(self) -> int:
        return self.peak - self.start

    def as_dict(self) -> dict[str, float]:
        kind = "cuda_max_allocated" if self.device.type == "cuda" else "rss_sampled"
        return {"kind": kind, "peak_mib": self.peak / 2**20, "delta_mib": self.delta / 2**20}


# ----------------------------------------------------------------------------------------------- output
def environment(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on (recorded in every JSON)."""
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(), "processor": platform.processor() or None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True, timeout=10,
                                            check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1e5 or magnitude < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}" if magnitude < 100 else f"{value:.1f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None, title: str | None = None) -> str:
    """A plain-text table of `rows` (missing cells left blank)."""
    if not rows:
        return f"{title}\n(no rows)" if title else "(no rows)"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ([title] if title else []) + [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
        "  ".join("-" * w for w in widths),
        *("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells),
    ]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    return value


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
    return path


def base_parser(name: str, doc: str | None, sizes: Sequence[str]) -> argparse.ArgumentParser:
    """The options every script shares: --size, --device, --repeats, --warmup, --threads, --out."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=(doc or "").splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default=sizes[0], choices=list(sizes), help="model size preset (default %(default)s)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default: per script)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant before timing")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1 on a CPU: OpenMP threads stall on a shared, busy machine; "
                        "torch's choice on a GPU)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="CPU timing: wall time, or the calling thread's CPU time (steadier on a loaded machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=f"runs/bench/{name}.json", help="JSON output path (default %(default)s)")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Seed, thread count, clock, quiet transformers logs and TF32 (allowed on GPUs, as the trainers do); returns the
    device."""
    global CLOCK
    from transformers.utils import logging as hf_logging

    CLOCK = getattr(args, "clock", "wall")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else None)
    if CLOCK == "thread" and device.type == "cpu" and threads != 1:
        raise ValueError("--clock thread measures the calling thread only: use it with --threads 1")
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def finish(name: str, args: argparse.Namespace, device: torch.device, results: dict[str, Any], text: str) -> Path:
    """Print the table text and write `{benchmark, args, environment, results}` to `args.out`."""
    print(text)
    out = write_json(args.out, {"benchmark": name, "args": vars(args), "environment": environment(device),
                                "results": results})
    print(f"\nwrote {out}")
    return out


def train_step(model, batch: dict, optimizer, device, dtype: str):
    """One optimizer step of a model whose output holds "loss": zero grads, forward (bf16 autocast when `dtype` is
    "bf16"), backward, step; returns the loss tensor."""
    optimizer.zero_grad(set_to_none=True)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with ctx:
        loss = model(**batch)["loss"]
    loss.backward()
    optimizer.step()
    return loss
