#!/usr/bin/env bash
# Offline synthetic POPE + attribute tasks on 2 CPU processes (accelerate's torchrun launcher with the CPU switch:
# plain `accelerate launch --cpu` would start a single process).
# usage: eval/scripts/lmm_synthetic_cpu.sh CKPT OUT [WORLD] [extra eval-lmm args]
set -euo pipefail
ckpt=${1:?LLaVA export dir}; out=${2:?output dir}; shift 2
world=()
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then world=(--world "$1"); shift; fi
ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m fgclip_lmm.cli eval-lmm \
  --model "$ckpt" --tasks fgclip_pope,fgclip_attr --out "$out" --batch-size 16 "${world[@]}" "$@"
