#!/usr/bin/env bash
# Offline quickstart: generate the synthetic dataset, train a small ReferFormer on the CPU, score it
# (true and swapped expressions) and write overlays. Results: output/quickstart/summary.json.
# Extra arguments go to tools/quickstart.py (e.g. --epochs 8, or -- --num_workers 2 for main.py flags).
set -euo pipefail
cd "$(dirname "$0")/.."
python tools/quickstart.py --output_dir output/quickstart --data_dir data/synthetic "$@"
