#!/usr/bin/env bash
# Ref-YouTube-VOS valid: masks for every expression and OUTPUT_DIR/submission.zip, ready to upload to the
# CodaLab server (the valid annotations are not public, so scoring happens there).
#
#   scripts/dist_test_ytvos.sh OUTPUT_DIR CHECKPOINT [extra inference flags, e.g. --backbone resnet101]
#
# Environment: GPUS (inference worker processes, default 8; one process on a CPU-only machine),
# YTVOS_PATH (default data/ref-youtube-vos).
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUTPUT_DIR CHECKPOINT [extra inference flags]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
OUTPUT_DIR=$1
CHECKPOINT=$2
shift 2
PYTHON=${PYTHON:-python3}

"$PYTHON" inference_ytvos.py --with_box_refine --binary --freeze_text_encoder --ngpu "${GPUS:-8}" \
    --ytvos_path "${YTVOS_PATH:-data/ref-youtube-vos}" --output_dir "$OUTPUT_DIR" --resume "$CHECKPOINT" "$@"
