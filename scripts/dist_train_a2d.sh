#!/usr/bin/env bash
# Fine-tune on A2D-Sentences from RefCOCO pre-trained weights (batch 2 per GPU, 6 epochs, LR drops after
# epochs 3 and 5); the A2D test set is scored after every epoch (log.txt, TensorBoard).
#
#   scripts/dist_train_a2d.sh OUTPUT_DIR PRETRAINED_WEIGHTS [extra flags, e.g. --backbone resnet101]
#
# Training passes --resume auto: the same command continues an interrupted run. Environment: A2D_PATH
# (default data/a2d_sentences) and the launcher settings of scripts/_launch.sh.
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUTPUT_DIR PRETRAINED_WEIGHTS [extra flags]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
source scripts/_launch.sh
OUTPUT_DIR=$1
PRETRAINED_WEIGHTS=$2
shift 2

rvos_launch main.py --dataset_file a2d --a2d_path "${A2D_PATH:-data/a2d_sentences}" --with_box_refine \
    --freeze_text_encoder --batch_size 2 --epochs 6 --lr_drop 3 5 --pretrained_weights "$PRETRAINED_WEIGHTS" \
    --output_dir "$OUTPUT_DIR" --resume auto "$@"
