#!/usr/bin/env bash
# The one prepared command for the device tool (see benchmarks/README.md, "GPU run"):
#   installs the wheels carried in benchmarks/.whl (lmms-eval and the few packages the GPU image lacks, plus the
#   transformers version this project is developed against), then runs gpu_all.py; everything lands in $OUT.
# If the carried transformers does not import there, the machine's own is used and $OUT/transformers_import.txt
# says why. Extra arguments go to gpu_all.py (e.g. --only encoder tower).
# PYTHON and WHEELS override the interpreter and the wheel folder (for a local test: WHEELS=none).
set -u
OUT=${OUT:-runs/bench/gpu_all}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-benchmarks/.whl}
mkdir -p "$OUT"
SITE=/tmp/fgclip_bench_site
export PYTHONPATH="$PWD"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl 2>&1 | tail -3
  export PYTHONPATH="$SITE:$PWD"
  if ! "$PYTHON" -c "import transformers.models.llava, transformers.models.clip" >"$OUT/transformers_import.txt" 2>&1; then
    echo "carried transformers does not import here; falling back to the machine's own" | tee -a "$OUT/transformers_import.txt"
    rm -rf "$SITE"/transformers "$SITE"/transformers-*.dist-info
  fi
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
"$PYTHON" benchmarks/gpu_all.py --out-dir "$OUT" "$@" 2>&1 | tee "$OUT/gpu_all.log"
exit "${PIPESTATUS[0]}"
