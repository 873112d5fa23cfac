#!/usr/bin/env bash
# Shared launcher of the dist_*.sh and slurm_train.sh scripts: runs a Python entry point under torchrun
# on this node, with one process per GPU.
#
#   scripts/_launch.sh SCRIPT.py [script flags]      (or `source` it and call rvos_launch SCRIPT.py ...)
#
# Environment (all optional):
#   GPUS_PER_NODE  processes on this node (default: $GPUS if set, else the number of visible GPUs, else 1)
#   NNODES         nodes in the job (default: $SLURM_NNODES under SLURM, else 1)
#   NODE_RANK      this node's index, 0..NNODES-1 (default: $SLURM_NODEID under SLURM, else 0)
#   MASTER_ADDR    host of node 0 (default: first host of $SLURM_JOB_NODELIST under SLURM, else 127.0.0.1)
#   MASTER_PORT    rendezvous port (default: $PORT, else 29500)
#   RDZV_ENDPOINT  host:port of a c10d rendezvous; when set, used instead of MASTER_ADDR/NODE_RANK
#                  (elastic: nodes may start in any order)
#   LAUNCHER       torchrun (default) or legacy (python -m torch.distributed.launch --use_env)
#   PYTHON         interpreter (default python3)
#   DRY_RUN=1      print the command instead of running it
set -euo pipefail

rvos_gpus_per_node() {
    if [ -n "${GPUS_PER_NODE:-}" ]; then echo "$GPUS_PER_NODE"; return; fi
    if [ -n "${GPUS:-}" ]; then echo "$GPUS"; return; fi
    local count=0
    if command -v nvidia-smi > /dev/null 2>&1; then
        count=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
    fi
    if [ "${count:-0}" -gt 0 ]; then echo "$count"; else echo 1; fi
}

rvos_master_addr() {
    if [ -n "${MASTER_ADDR:-}" ]; then echo "$MASTER_ADDR"; return; fi
    if [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol > /dev/null 2>&1; then
        scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1
        return
    fi
    echo 127.0.0.1
}

# rvos_launch SCRIPT [flags]: run SCRIPT under torchrun (or the legacy launcher) with the settings above.
rvos_launch() {
    local python=${PYTHON:-python3}
    local nproc nnodes node_rank addr port
    nproc=$(rvos_gpus_per_node)
    nnodes=${NNODES:-${SLURM_NNODES:-1}}
    node_rank=${NODE_RANK:-${SLURM_NODEID:-0}}
    addr=$(rvos_master_addr)
    port=${MASTER_PORT:-${PORT:-29500}}
    local -a cmd
    if [ "${LAUNCHER:-torchrun}" = legacy ]; then
        cmd=("$python" -m torch.distributed.launch --use_env)
    else
        cmd=("$python" -m torch.distributed.run)
    fi
    cmd+=(--nproc_per_node "$nproc" --nnodes "$nnodes")
    if [ -n "${RDZV_ENDPOINT:-}" ]; then
        cmd+=(--rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" --rdzv_id "${SLURM_JOB_ID:-rvos}")
    else
        cmd+=(--node_rank "$node_rank" --master_addr "$addr" --master_port "$port")
    fi
    cmd+=("$@")
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf '%q ' "${cmd[@]}"
        printf '\n'
    else
        "${cmd[@]}"
    fi
}

# rvos_run COMMAND...: run a single-process command (inference, evaluation), or print it under DRY_RUN=1.
rvos_run() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    if [ "$#" -lt 1 ]; then
        echo "usage: $0 SCRIPT.py [flags]" >&2
        exit 2
    fi
    cd "$(dirname "$0")/.."
    rvos_launch "$@"
fi
