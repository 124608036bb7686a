#!/usr/bin/env bash
# LLaVA-1.5 recipe with an FG-CLIP tower on one node with 8 GPUs: assemble -> align (ZeRO-2) -> finetune (ZeRO-3).
#   TOWER=runs/stage2_l14_336/hf LLM=lmsys/vicuna-7b-v1.5 train_lmm/scripts/llava15_8gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TOWER=${TOWER:-qihoo360/fg-clip-large}
LLM=${LLM:-lmsys/vicuna-7b-v1.5}
OUT=${OUT:-runs/llava15-fgclip}
fgclip-lmm assemble --tower "fgclip:$TOWER" --llm "$LLM" --projector mlp2x_gelu --template vicuna_v1 \
  --out "$OUT/assembled"
deepspeed --num_gpus 8 train_lmm/train.py --config llava15_align --model "$OUT/assembled" --output_dir "$OUT/align"
deepspeed --num_gpus 8 train_lmm/train.py --config llava15_finetune --model "$OUT/align/hf" \
  --output_dir "$OUT/finetune"
