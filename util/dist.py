"""torch.distributed helpers: process-group set-up from torchrun/SLURM env, rank queries, reductions."""
from __future__ import annotations

import logging
import os
import subprocess
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed_mode(args: Any) -> None:
    """Join the process group described by torchrun (RANK/WORLD_SIZE/LOCAL_RANK) or SLURM variables.

    Sets args.distributed, args.rank, args.world_size, args.gpu. NCCL is used when the run is on CUDA,
    gloo otherwise, so the same command trains on a CPU box and on a GPU cluster.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        args.rank = int(os.environ["SLURM_PROCID"])
        args.world_size = int(os.environ["SLURM_NTASKS"])
        n_gpus = max(torch.cuda.device_count(), 1)
        args.gpu = args.rank % n_gpus
        node_list = os.environ["SLURM_NODELIST"]
        addr = subprocess.getoutput(f"scontrol show hostname {node_list} | head -n1")
        os.environ.setdefault("MASTER_ADDR", addr)
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(args.rank), str(args.world_size)
        os.environ["LOCAL_RANK"] = str(args.gpu)
    else:
        args.distributed, args.rank, args.world_size, args.gpu = False, 0, 1, 0
        return
    args.distributed = True
    use_cuda = str(args.device).startswith("cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(args.gpu)
    backend = "nccl" if use_cuda else "gloo"
    logger.info("distributed init (rank %d of %d, backend %s)", args.rank, args.world_size, backend)
    dist.init_process_group(backend=backend, init_method=getattr(args, "dist_url", "env://"),
                            world_size=args.world_size, rank=args.rank)
    dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (identity when not distributed)."""
    if get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= get_world_size()
    return t


def reduce_dict(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average every tensor of a dict over ranks with a single all_reduce, for logging."""
    if get_world_size() < 2 or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in keys])
    dist.all_reduce(stacked)
    stacked /= get_world_size()
    return dict(zip(keys, stacked))


def all_gather_object(obj: Any) -> list[Any]:
    """Gather any picklable object from every rank (list ordered by rank)."""
    if get_world_size() < 2:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()
