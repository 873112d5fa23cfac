#!/usr/bin/env bash
# Multi-node training under SLURM: one torchrun per node (srun, one task per node), one process per GPU.
#
#   sbatch --nodes 4 --ntasks-per-node 1 --gpus-per-node 8 --cpus-per-task 32 --requeue \
#       scripts/slurm_train.sh OUTPUT_DIR [main.py flags, e.g. --dataset_file ytvos --with_box_refine ...]
#
# (or run it inside `salloc`). Node 0's first host is the rendezvous (c10d, port MASTER_PORT, default
# 29500); GPUS_PER_NODE defaults to SLURM_GPUS_ON_NODE. --resume auto is always passed, so a requeued or
# resubmitted job continues from the newest checkpoint in OUTPUT_DIR (which must be on a shared file system).
set -euo pipefail
if [ "$#" -lt 1 ]; then
    echo "usage: $0 OUTPUT_DIR [main.py flags]" >&2
    exit 2
fi
if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "$0: not inside a SLURM allocation; submit it with sbatch (see the header) or run it in salloc" >&2
    exit 2
fi
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
source scripts/_launch.sh
OUTPUT_DIR=$1
shift

MASTER_ADDR=$(rvos_master_addr)
export MASTER_ADDR
export GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-$(rvos_gpus_per_node)}}
export RDZV_ENDPOINT=${RDZV_ENDPOINT:-$MASTER_ADDR:${MASTER_PORT:-29500}}
mkdir -p "$OUTPUT_DIR"

rvos_run srun --ntasks-per-node 1 --kill-on-bad-exit 1 bash scripts/_launch.sh main.py \
    --output_dir "$OUTPUT_DIR" --resume auto "$@"
