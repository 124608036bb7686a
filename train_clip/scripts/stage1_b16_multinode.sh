#!/usr/bin/env bash
# Stage 1, ViT-B/16, several nodes through the DeepSpeed launcher and a hostfile (see stage2_l14_336_multinode.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
HOSTFILE=${HOSTFILE:-/job/hostfile}
deepspeed --hostfile "$HOSTFILE" --master_port "${MASTER_PORT:-29500}" train_clip/train.py \
  --config stage1_b16 --deepspeed_config zero2 "$@"
