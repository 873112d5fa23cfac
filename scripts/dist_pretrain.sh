#!/usr/bin/env bash
# Image pre-training on RefCOCO + RefCOCO+ + RefCOCOg (--dataset_file all: clips of one frame, batch 2 per
# GPU, 12 epochs, LR drops after epochs 8 and 10). The text encoder is trained (no --freeze_text_encoder).
# Upstream's script broke here: a comment after a line-continuation backslash cut the command in two
# (spec 11.1 #15); keep comments out of continued lines.
#
#   scripts/dist_pretrain.sh OUTPUT_DIR [extra flags, e.g. --backbone resnet101]
#
# Data: the RefCOCO/+/g files in COCO_PATH (default data/coco; layout in docs/datasets.md). Training passes
# --resume auto. Launcher settings: scripts/_launch.sh (the upstream run used 32 GPUs: NNODES=4).
set -euo pipefail
if [ "$#" -lt 1 ]; then
    echo "usage: $0 OUTPUT_DIR [extra flags]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
source scripts/_launch.sh
OUTPUT_DIR=$1
shift

rvos_launch main.py --dataset_file all --coco_path "${COCO_PATH:-data/coco}" --with_box_refine --binary \
    --batch_size 2 --num_frames 1 --epochs 12 --lr_drop 8 10 --output_dir "$OUTPUT_DIR" --resume auto "$@"
