#!/usr/bin/env bash
# LLaVA-1.5 LoRA finetune (r 128, alpha 256) over several nodes with a DeepSpeed hostfile.
#   HOSTFILE=/job/hostfile train_lmm/scripts/llava15_lora_multinode.sh --model runs/llava15-fgclip/align/hf
set -euo pipefail
cd "$(dirname "$0")/../.."
deepspeed --hostfile "${HOSTFILE:-/job/hostfile}" --master_port "${MASTER_PORT:-29500}" train_lmm/train.py \
  --config llava15_lora "$@"
