"""torch.distributed helpers: process-group set-up from torchrun/launch/SLURM env, rank queries, reductions.

Supported launchers (all single- or multi-node):
- ``torchrun`` (and ``python -m torch.distributed.launch --use_env``): RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR/MASTER_PORT from the environment;
- the legacy ``torch.distributed.launch`` without ``--use_env``: the same, but LOCAL_RANK comes as the
  ``--local_rank``/``--local-rank`` argument;
- plain ``srun`` with one task per GPU: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the first host of
  SLURM_JOB_NODELIST as MASTER_ADDR (MASTER_PORT 29500 unless set).
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = "29500"


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def _first_slurm_host(node_list: str) -> str:
    """The first host name of a SLURM node list ("gpu[01-04]" -> "gpu01"), via scontrol."""
    out = subprocess.run(["scontrol", "show", "hostnames", node_list], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def _ranks_from_environment(args: Any) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the launcher's environment, or None for a single process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local = os.environ.get("LOCAL_RANK")
        local_rank = int(local) if local is not None else int(getattr(args, "local_rank", None) or 0)
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local_rank = int(os.environ.get("SLURM_LOCALID", rank % max(torch.cuda.device_count(), 1)))
        if "MASTER_ADDR" not in os.environ:
            node_list = os.environ.get("SLURM_JOB_NODELIST") or os.environ["SLURM_NODELIST"]
            os.environ["MASTER_ADDR"] = _first_slurm_host(node_list)
        os.environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
        return rank, world, local_rank
    return None


def init_distributed_mode(args: Any) -> bool:
    """Join the process group described by the launcher; returns True if this call created it.

    Sets args.distributed, args.rank, args.world_size, args.gpu (the local rank). The backend is
    ``--dist_backend`` (auto: NCCL when the run is on CUDA, gloo otherwise), so the same command trains
    on a CPU box and on a GPU cluster. A process group that already exists (a caller set it up) is used
    as it is.
    """
    if is_dist_avail_and_initialized():
        args.distributed, args.rank, args.world_size = get_world_size() > 1, get_rank(), get_world_size()
        args.gpu = int(os.environ.get("LOCAL_RANK", args.rank))
        return False
    ranks = _ranks_from_environment(args)
    if ranks is None:
        args.distributed, args.rank, args.world_size, args.gpu = False, 0, 1, 0
        return False
    args.rank, args.world_size, args.gpu = ranks
    args.distributed = True
    use_cuda = str(args.device).startswith("cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(args.gpu)
    backend = getattr(args, "dist_backend", "auto")
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    timeout = datetime.timedelta(minutes=getattr(args, "dist_timeout_min", 60))
    logger.info("distributed init: rank %d of %d (local %d), backend %s, %s", args.rank, args.world_size,
                args.gpu, backend, getattr(args, "dist_url", "env://"))
    dist.init_process_group(backend=backend, init_method=getattr(args, "dist_url", "env://"),
                            world_size=args.world_size, rank=args.rank, timeout=timeout,
                            device_id=torch.device("cuda", args.gpu) if backend == "nccl" else None)
    barrier()
    return True


def cleanup_distributed() -> None:
    """Leave the process group (after a final barrier so no rank exits while others still talk)."""
    if is_dist_avail_and_initialized():
        barrier()
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (identity when not distributed)."""
    if get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= get_world_size()
    return t


def all_reduce_sum(value: float | int) -> float:
    """Sum a Python number over ranks (identity when not distributed)."""
    if get_world_size() < 2:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return float(t.item())


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


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s value of a picklable object, on every rank."""
    if get_world_size() < 2:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step every rank holds
    the statistics of its own last batch; evaluating with them would score slightly different models.
    """
    if get_world_size() < 2:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def barrier() -> None:
    if is_dist_avail_and_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _collective_device() -> torch.device:
    """Where tensors for a collective must live: the current GPU for NCCL, the CPU otherwise."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
