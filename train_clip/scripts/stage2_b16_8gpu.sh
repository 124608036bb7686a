#!/usr/bin/env bash
# Stage 2 (official scripts/train.sh): FineHARD, regional + hard negatives, ViT-B/16 @224, one node with 8 GPUs.
# 512 per GPU (global 4096), lr 1e-6, wd 0.001, 200 warmup steps, cosine, 1 epoch, bf16, ZeRO-2.
# Continue from a stage-1 run with --init_from runs/stage1_b16/hf, or from qihoo360/fg-clip-base.
set -euo pipefail
cd "$(dirname "$0")/../.."
deepspeed --num_gpus 8 train_clip/train.py --config stage2_b16 \
  --deepspeed_config zero2 "$@"
