#!/usr/bin/env bash
# Stage 2, ViT-L/14 @336, several nodes through the DeepSpeed launcher and a hostfile
# (one line per node: "<hostname> slots=8"; passwordless ssh between nodes, same paths everywhere).
#   HOSTFILE=train_clip/scripts/hostfile.example train_clip/scripts/stage2_l14_336_multinode.sh --output_dir runs/l14
set -euo pipefail
cd "$(dirname "$0")/../.."
HOSTFILE=${HOSTFILE:-/job/hostfile}
deepspeed --hostfile "$HOSTFILE" --master_port "${MASTER_PORT:-29500}" train_clip/train.py \
  --config stage2_l14_336 --deepspeed_config zero2 "$@"
