#!/usr/bin/env bash
# Encoder benchmarks of one checkpoint: FG-OVD, COCO box classification, long / short retrieval.
# usage: eval/scripts/clip_suite.sh CKPT DATA_ROOT OUT [extra eval-clip args]
#   DATA_ROOT: the official files (see eval/README.md) or a synthetic world written by `fgclip-lmm synth`.
set -euo pipefail
ckpt=${1:?checkpoint dir or hub id}; root=${2:?data root}; out=${3:?output dir}; shift 3
if [ -f "$root/manifest.json" ]; then  # a synthetic world: every bench reads its test split
  for bench in fgovd boxcls retrieval; do
    fgclip-lmm eval-clip --model "$ckpt" --bench "$bench" --data "$root" --synth-set test --out "$out/$bench" "$@"
  done
  exit 0
fi
fgclip-lmm eval-clip --model "$ckpt" --bench fgovd --data "$root/fgovd" --out "$out/fgovd" "$@"
fgclip-lmm eval-clip --model "$ckpt" --bench boxcls --data "$root/coco/annotations/instances_val2017.json" \
  --image-root "$root/coco/val2017" --out "$out/boxcls" "$@"
fgclip-lmm eval-clip --model "$ckpt" --bench retrieval --data "$root/retrieval/long.json" --text-path long \
  --out "$out/retrieval_long" "$@"
fgclip-lmm eval-clip --model "$ckpt" --bench retrieval --data "$root/retrieval/short.json" --text-path short \
  --out "$out/retrieval_short" "$@"
