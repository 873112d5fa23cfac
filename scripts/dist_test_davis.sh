#!/usr/bin/env bash
# Ref-DAVIS17 with a checkpoint trained on Ref-YouTube-VOS (no fine-tuning): inference for the four
# annotators, DAVIS-2017 J&F of each (unsupervised protocol), and their average (the number papers report).
#
#   scripts/dist_test_davis.sh OUTPUT_DIR CHECKPOINT [extra inference flags, e.g. --backbone resnet101]
#
# Environment: GPUS (inference worker processes, default 8; one process on a CPU-only machine),
# DAVIS_PATH (the converted Ref-DAVIS17 root, default data/ref-davis; its DAVIS/ folder is the ground truth).
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUTPUT_DIR CHECKPOINT [extra inference flags]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
OUTPUT_DIR=$1
CHECKPOINT=$2
shift 2
DAVIS_PATH=${DAVIS_PATH:-data/ref-davis}
PYTHON=${PYTHON:-python3}

"$PYTHON" inference_davis.py --with_box_refine --binary --freeze_text_encoder --ngpu "${GPUS:-8}" \
    --davis_path "$DAVIS_PATH" --output_dir "$OUTPUT_DIR" --resume "$CHECKPOINT" "$@"
for anno in 0 1 2 3; do
    "$PYTHON" eval_davis.py --davis_path "$DAVIS_PATH/DAVIS" --set val --task unsupervised \
        --results_path "$OUTPUT_DIR/valid/anno_$anno"
done
"$PYTHON" tools/average_davis_annotators.py "$OUTPUT_DIR/valid" --set val
