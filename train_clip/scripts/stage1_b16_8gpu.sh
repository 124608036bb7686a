#!/usr/bin/env bash
# Stage 1 (global long/short alignment), ViT-B/16 from OpenAI CLIP, one node with 8 GPUs.
# Paper: 384 per device, lr 1e-4, 1 epoch, AdamW, ZeRO-2, bf16. Extra arguments override any config key.
set -euo pipefail
cd "$(dirname "$0")/../.."
deepspeed --num_gpus 8 train_clip/train.py --config stage1_b16 \
  --deepspeed_config zero2 "$@"
