"""Every benchmark script imports in the test environment (which `make test` builds with the `bench` extra), so
a dependency the benchmarks need but nothing installs (lmms-eval's llava_hf importing decord) fails here."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MODULES = sorted(p.stem for p in BENCHMARKS.glob("*.py"))


def test_the_benchmarks_are_all_listed():
    assert {"bench_pope_eval", "bench_stage2_step", "common", "gpu_all"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other by plain name
    module = importlib.import_module(name)
    assert module.__doc__, f"benchmarks/{name}.py has no module docstring"
    if name.startswith("bench_") or name == "gpu_all":
        assert callable(getattr(module, "main", None)), f"benchmarks/{name}.py has no main()"
    assert sys.modules[name] is module
