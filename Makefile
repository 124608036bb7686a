# Two entry points for a new user: `make demo` (the main job) and `make test` (the suite); `make bench` runs the
# CPU benchmarks (benchmarks/README.md). All build the project virtualenv idempotently: it is rebuilt only when
# pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv lint test demo demo-tiny bench bench-lmm-recipe clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the local wheels (CUDA builds that run on a CPU); see env notes in README.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

# ruff (configured in pyproject.toml: line length 120, import sorting, E/F/W/I/B/UP); `make test` runs it first.
lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest -q -x --durations=15

# Every benchmark at its CPU size, one after the other (each writes runs/bench/<name>.json; ~15 minutes in all).
bench: venv
	for script in benchmarks/bench_*.py; do [ $$script = benchmarks/bench_lmm_recipe.py ] || $(PY) $$script || exit 1; done

bench-lmm-recipe: demo  # trains ~10 small LMMs on the demo's world and tower (~40 min on 2 cores)
	$(PY) benchmarks/bench_lmm_recipe.py --run runs/demo

demo: venv
	$(VENV)/bin/fgclip-lmm demo --out runs/demo

demo-tiny: venv
	$(VENV)/bin/fgclip-lmm demo --tiny --out runs/demo-tiny

clean-venv:
	rm -rf $(VENV)
