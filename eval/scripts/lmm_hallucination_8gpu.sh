#!/usr/bin/env bash
# Hallucination / attribute suite of a LLaVA export on 8 GPUs (data parallel; rank 0 writes the report).
# usage: eval/scripts/lmm_hallucination_8gpu.sh CKPT OUT [extra eval-lmm args]
set -euo pipefail
ckpt=${1:?LLaVA export dir (OUT/hf of train-lmm)}; out=${2:?output dir}; shift 2
accelerate launch --num_processes "${NUM_GPUS:-8}" -m fgclip_lmm.cli eval-lmm --model "$ckpt" \
  --tasks pope_random,pope_pop,pope_adv,mme,hallusion_bench_image,mmvp \
  --out "$out" --batch-size 8 --device cuda --dtype bfloat16 "$@"
