#!/usr/bin/env bash
# Fine-tune on Ref-YouTube-VOS from RefCOCO pre-trained weights (6 epochs, LR drops after epochs 3 and 5),
# then write the valid-split predictions and submission.zip with OUTPUT_DIR/checkpoint.pth.
#
#   scripts/dist_train_test_ytvos.sh OUTPUT_DIR PRETRAINED_WEIGHTS [extra flags, e.g. --backbone resnet101]
#
# Extra flags go to training and inference. Training always passes --resume auto, so running the same
# command again after a crash or pre-emption continues from the newest checkpoint in OUTPUT_DIR.
# Environment: YTVOS_PATH (default data/ref-youtube-vos) and the launcher settings of scripts/_launch.sh
# (GPUS_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, ...). Inference runs on node 0 only.
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
YTVOS_PATH=${YTVOS_PATH:-data/ref-youtube-vos}

rvos_launch main.py --dataset_file ytvos --ytvos_path "$YTVOS_PATH" --with_box_refine --binary \
    --freeze_text_encoder --epochs 6 --lr_drop 3 5 --pretrained_weights "$PRETRAINED_WEIGHTS" \
    --output_dir "$OUTPUT_DIR" --resume auto "$@"

if [ "${NODE_RANK:-${SLURM_NODEID:-0}}" = 0 ]; then
    rvos_run env GPUS="$(rvos_gpus_per_node)" YTVOS_PATH="$YTVOS_PATH" bash scripts/dist_test_ytvos.sh "$OUTPUT_DIR" \
        "$OUTPUT_DIR/checkpoint.pth" "$@"
fi
