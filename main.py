"""Train (and validate) any registered method; `--eval` scores a checkpoint only.

Runs as one process (``python main.py ...``) or under ``torchrun`` / ``torch.distributed.launch`` / ``srun``
on one or many nodes (see scripts/ and docs/training.md). Checkpoints hold everything needed to continue
exactly (weights, optimiser, schedule, epoch and position in it, RNG states of every rank); they are written
atomically every epoch and every ``--save_every_iters`` iterations, and ``--resume auto`` picks the newest
readable one in ``--output_dir``.
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import random
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import datasets
from datasets.samplers import DistributedSampler, EvalDistributedSampler, SeededSamples
from engine import NonFiniteBudget, NonFiniteLossError, train_one_epoch
from models import build_model
from models.registry import get_method
from opts import parse_args
from util.checkpoint import (LATEST_NAME, capture_rng_state, find_resume_checkpoint, load_checkpoint,
                             load_model_weights, model_state_from_checkpoint, plain_namespace, restore_rng_state,
                             save_checkpoint, snapshot_checkpoint)
from util.dist import (all_gather_object, broadcast_buffers, broadcast_object, cleanup_distributed, get_rank,
                       get_world_size, init_distributed_mode, is_main_process)
from util.logging import append_json_line, setup_logging, write_json_atomic
from util.misc import collate_fn

logger = logging.getLogger("main")

CHECKPOINT_FORMAT = 2  # 1: upstream (model, optimizer, lr_scheduler, epoch, args); 2: + progress, rng


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """--deterministic: deterministic kernels where PyTorch has them (a warning names those that have not)."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def use_fused_adamw(params: list[torch.Tensor], impl: str) -> bool:
    """Whether AdamW runs fused: always for 'fused', never for 'foreach', and for 'auto' when torch has a fused
    kernel for every parameter (floating point, on CPU or CUDA)."""
    if impl not in ("auto", "fused", "foreach"):
        raise ValueError(f"--adamw_impl: expected auto, fused or foreach, got {impl!r}")
    if impl != "auto":
        return impl == "fused"
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_optimizer(model: nn.Module, args: Any, iterations_per_epoch: int = 0
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the method's parameter groups (upstream's four for ReferFormer) and the --lr_schedule.

    step: MultiStepLR stepped once per epoch. cosine: stepped after every iteration over
    ``epochs * iterations_per_epoch`` iterations (see ``steps_per_iteration``).
    """
    groups = get_method(args.method).param_groups(model, args)
    fused = use_fused_adamw([p for g in groups for p in g["params"]], args.adamw_impl)
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay, fused=fused,
                                  foreach=None if fused else True)
    if args.lr_schedule == "step":
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_drop, gamma=0.1)
    if iterations_per_epoch <= 0:
        raise ValueError("--lr_schedule cosine needs the number of iterations per epoch (the training loader's length)")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_factor(args.epochs * iterations_per_epoch))


def cosine_factor(total: int) -> Callable[[int], float]:
    """LR multiplier 0.5 * (1 + cos(pi * iteration / total)), 0 from ``total`` on.

    A plain function, so LambdaLR's state_dict stores nothing of it and a resumed run decays over the total of
    its own --epochs (as a resumed step schedule takes this run's --lr_drop).
    """
    def factor(iteration: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / total))

    return factor


def steps_per_iteration(scheduler: Any) -> bool:
    """Whether the scheduler advances every iteration (cosine) rather than every epoch (MultiStepLR)."""
    return isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)


def wrap_distributed(model: nn.Module, args: Any, device: torch.device) -> nn.Module:
    """DistributedDataParallel when distributed; find_unused_parameters only if the method (or the flag) asks."""
    if not args.distributed:
        return model
    find_unused = bool(args.find_unused_parameters or getattr(get_method(args.method), "find_unused_parameters", False))
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=find_unused)


def load_initial_weights(model: nn.Module, args: Any) -> None:
    """--pretrained_weights: fine-tune from a pre-trained checkpoint, re-initialising the class heads."""
    state = model_state_from_checkpoint(load_checkpoint(args.pretrained_weights))
    state = {k: v for k, v in state.items() if not k.startswith("class_embed.")}
    missing, unexpected, mismatched = load_model_weights(model, state, get_method(args.method).official_key_map)
    logger.info("loaded %s: %d missing (class heads re-initialised), %d unexpected, %d shape mismatches",
                args.pretrained_weights, len(missing), len(unexpected), len(mismatched))
    fresh = model.describe_partial_load(missing) if hasattr(model, "describe_partial_load") else []
    if fresh:
        logger.info("left at initialisation (not in %s): %s", args.pretrained_weights, ", ".join(fresh))
    if mismatched:
        raise ValueError(f"{args.pretrained_weights}: shape mismatches, e.g. {mismatched[:3]}")


def find_checkpoint_to_resume(args: Any) -> Optional[tuple[str, dict[str, Any]]]:
    """(path, contents) for --resume PATH, or the newest readable checkpoint of --output_dir for --resume auto.

    With auto, rank 0 chooses and every rank loads the same file (output_dir must be shared between nodes).
    """
    if not args.resume:
        return None
    if args.resume != "auto":
        return args.resume, load_checkpoint(args.resume)
    found = find_resume_checkpoint(args.output_dir) if is_main_process() else None
    path = broadcast_object(str(found[0]) if found else None)
    if path is None:
        logger.info("--resume auto: no checkpoint in %s, starting from scratch", args.output_dir)
        return None
    logger.info("--resume auto: continuing from %s", path)
    return path, found[1] if found else load_checkpoint(path)


@dataclass
class StartPoint:
    """Where training continues: the epoch and the number of its global sample positions already consumed."""

    epoch: int = 0
    position: int = 0


def apply_lr_drop(optimizer: torch.optim.Optimizer, scheduler: Any, milestones: list[int]) -> None:
    """Use the --lr_drop of this run on a resumed MultiStepLR (upstream silently kept the old milestones)."""
    if sorted(Counter(milestones).elements()) == sorted(scheduler.milestones.elements()):
        return
    logger.info("resume: --lr_drop %s replaces the checkpoint's milestones %s", milestones,
                sorted(scheduler.milestones.elements()))
    scheduler.milestones = Counter(milestones)
    drops = bisect.bisect_right(sorted(milestones), scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * scheduler.gamma ** drops


def restore_training_state(ckpt: dict[str, Any], source: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any, budget: NonFiniteBudget, args: Any) -> StartPoint:
    """Load weights and, unless --eval, optimiser, schedule, position, RNG states; returns where to continue.

    Upstream checkpoints (no 'progress') continue at the epoch after 'epoch'. RNG states are per rank and
    restored only on the same world size (the data order does not depend on them).
    """
    missing, unexpected, mismatched = load_model_weights(model, model_state_from_checkpoint(ckpt),
                                                         get_method(args.method).official_key_map)
    if missing or unexpected or mismatched:
        logger.warning("resume %s: missing %s, unexpected %s, mismatched %s", source, missing[:5], unexpected[:5],
                       mismatched[:5])
    if args.eval or not all(k in ckpt for k in ("optimizer", "lr_scheduler", "epoch")):
        return StartPoint(args.start_epoch)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    if not steps_per_iteration(scheduler):
        apply_lr_drop(optimizer, scheduler, args.lr_drop)
    progress = ckpt.get("progress")
    if progress is None:
        return StartPoint(int(ckpt["epoch"]) + 1)
    rng = ckpt.get("rng") or []
    if len(rng) == get_world_size():
        restore_rng_state(rng[get_rank()])
    else:
        logger.warning("resume %s: saved by %d processes, running on %d: random streams (dropout) are not "
                       "restored; the data order still continues exactly", source, len(rng), get_world_size())
    budget.skipped = int(ckpt.get("nonfinite_skipped", 0))
    return StartPoint(int(progress["epoch"]), int(progress["position"]))


def make_loader(dataset: Any, args: Any, train: bool) -> DataLoader:
    """The data loader of a split for this rank.

    Training: epoch-seeded interleaved sampler with per-position sample seeds (exactly resumable, the same
    augmentation whatever the rank or worker count). Evaluation: contiguous chunks per rank, in order.
    """
    if train:
        sampler = DistributedSampler(dataset, shuffle=True, seed=args.seed, seed_samples=True)
        dataset = SeededSamples(dataset, getattr(args, "bad_data", "error"))
    else:
        sampler = EvalDistributedSampler(dataset)
    batch_sampler = torch.utils.data.BatchSampler(sampler, args.batch_size, drop_last=train)
    generator = torch.Generator()
    generator.manual_seed(args.seed + get_rank())  # the loader then never draws from the global torch RNG
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=args.num_workers,
                      persistent_workers=args.num_workers > 0, generator=generator)


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run a block (evaluation) without moving any random stream the training continues with."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def evaluate(model: nn.Module, postprocessors: dict[str, nn.Module], args: Any,
             device: torch.device) -> Optional[dict[str, Any]]:
    """The dataset's own evaluation protocol (registered in datasets/), or None if it has nothing to score."""
    evaluator = datasets.get_evaluator(args.dataset_file)
    if evaluator is None:
        return None
    with preserved_rng_state():
        return evaluator(model, postprocessors, args, device)


class Trainer:
    """The training loop of main(): epochs, periodic and per-epoch checkpoints, logging, validation."""

    def __init__(self, args: Any, model: nn.Module, model_without_ddp: nn.Module, criterion: nn.Module,
                 postprocessors: dict[str, nn.Module], optimizer: torch.optim.Optimizer, scheduler: Any,
                 device: torch.device, budget: NonFiniteBudget):
        self.args, self.model, self.model_without_ddp = args, model, model_without_ddp
        self.criterion, self.postprocessors = criterion, postprocessors
        self.optimizer, self.scheduler, self.device, self.budget = optimizer, scheduler, device, budget
        self.output_dir = Path(args.output_dir)
        self.global_batch = args.batch_size * get_world_size()
        self.writer = _tensorboard(self.output_dir) if is_main_process() else None
        self.saved: Optional[str] = None

    def save(self, epoch_done: int, next_epoch: int, position: int, snapshot: bool = False) -> None:
        """Checkpoint on rank 0, with the RNG states of every rank (a collective: all ranks call it)."""
        rng = all_gather_object(capture_rng_state())
        if not is_main_process():
            return
        latest = self.output_dir / LATEST_NAME
        state = {"model": self.model_without_ddp.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "lr_scheduler": self.scheduler.state_dict(), "epoch": epoch_done, "args": plain_namespace(self.args),
                 "progress": {"epoch": next_epoch, "position": position,
                              "iteration": position // self.global_batch, "world_size": get_world_size(),
                              "batch_size": self.args.batch_size},
                 "rng": rng, "nonfinite_skipped": self.budget.skipped, "format": CHECKPOINT_FORMAT}
        save_checkpoint(state, latest)
        if snapshot:
            snapshot_checkpoint(latest, self.output_dir / f"checkpoint{epoch_done:04}.pth")
        self.saved = f"{latest} (epoch {next_epoch}, {position} samples into it)"

    def train_epoch(self, loader: DataLoader, epoch: int, start_position: int) -> dict[str, float]:
        sampler = loader.batch_sampler.sampler
        start_position = min(start_position, sampler.total_size)  # a checkpoint of a run on more processes
        sampler.set_epoch(epoch, start_position)
        start_iteration = start_position // self.global_batch
        iterations = start_iteration + len(loader)
        every = self.args.save_every_iters

        def on_step(it: int, stats: dict[str, float]) -> None:
            if steps_per_iteration(self.scheduler):
                self.scheduler.step()
            if self.writer is not None and it % self.args.print_freq == 0:
                for k, v in stats.items():
                    self.writer.add_scalar(f"train/{k}", v, epoch * iterations + it)
            done = it + 1
            if every > 0 and done % every == 0 and done < iterations:
                self.save(epoch - 1, epoch, start_position + (done - start_iteration) * self.global_batch)

        return train_one_epoch(self.model, self.criterion, loader, self.optimizer, self.device, epoch,
                               self.args.clip_max_norm, self.args.print_freq, on_step,
                               start_iteration=start_iteration, nonfinite=self.budget, amp=self.args.amp)

    def validate(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        broadcast_buffers(self.model_without_ddp)  # every rank scores rank 0's model (the one checkpointed)
        stats = evaluate(self.model_without_ddp, self.postprocessors, self.args, self.device) or {}
        scalars = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
        record.update({f"val_{k}": v for k, v in scalars.items()})
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"val/{k}", v, epoch)
        return stats

    def run(self, loader: DataLoader, start: StartPoint) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        position = start.position
        for epoch in range(start.epoch, self.args.epochs):
            began = time.time()
            train_stats = self.train_epoch(loader, epoch, position)
            position = 0
            if not steps_per_iteration(self.scheduler):
                self.scheduler.step()
            record: dict[str, Any] = {"epoch": epoch, "epoch_time_s": time.time() - began,
                                      **{f"train_{k}": v for k, v in train_stats.items()}}
            self.save(epoch, epoch + 1, 0, snapshot=True)
            if self.args.eval_every and (epoch + 1) % self.args.eval_every == 0:
                stats = self.validate(epoch, record)
            if is_main_process():
                append_json_line(self.output_dir / "log.txt", record)
                logger.info("epoch %d: %s", epoch,
                            {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        if self.writer is not None:
            self.writer.close()
        return stats


def _tensorboard(output_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


def run_evaluation(model: nn.Module, postprocessors: dict[str, nn.Module], args: Any,
                   device: torch.device) -> dict[str, Any]:
    """--eval: score the model with the dataset's protocol and write output_dir/eval.json (rank 0)."""
    stats = evaluate(model, postprocessors, args, device)
    if stats is None:
        raise SystemExit(f"--eval: dataset {args.dataset_file!r} has no annotated split to score locally; use "
                         "the inference scripts to produce predictions instead")
    if is_main_process():
        write_json_atomic(Path(args.output_dir) / "eval.json", stats)
        logger.info("evaluation: %s", {k: v for k, v in stats.items() if isinstance(v, (int, float))})
    return stats


def run(args: Any) -> dict[str, Any]:
    """Everything main() does once the process group (if any) exists."""
    setup_logging(args.output_dir, get_rank())
    configure_determinism(getattr(args, "deterministic", False))
    seed_everything(args.seed + get_rank())
    device = torch.device(args.device if not args.distributed or args.device == "cpu" else f"cuda:{args.gpu}")
    logger.info("args: %s", vars(args))

    model_without_ddp, criterion, postprocessors = build_model(args)
    model_without_ddp.to(device)
    criterion.to(device)
    n_params = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)
    logger.info("method %s: %d trainable parameters, %d process(es)", args.method, n_params, get_world_size())
    loader = None if args.eval else make_loader(datasets.build_dataset("train", args), args, train=True)
    # --eval never steps the schedule; 1 only lets a cosine one be built
    optimizer, scheduler = build_optimizer(model_without_ddp, args, len(loader) if loader is not None else 1)
    budget = NonFiniteBudget(limit=getattr(args, "skip_nonfinite", 0))

    found = find_checkpoint_to_resume(args)
    if args.pretrained_weights and found is None:
        load_initial_weights(model_without_ddp, args)
    start = StartPoint(args.start_epoch)
    if found is not None:
        start = restore_training_state(found[1], found[0], model_without_ddp, optimizer, scheduler, budget, args)
        args.start_epoch = start.epoch
    model = wrap_distributed(model_without_ddp, args, device)

    if args.eval:
        return run_evaluation(model_without_ddp, postprocessors, args, device)

    trainer = Trainer(args, model, model_without_ddp, criterion, postprocessors, optimizer, scheduler, device, budget)
    try:
        return trainer.run(loader, start)
    except NonFiniteLossError:
        logger.error("training stopped; the last good checkpoint is %s", trainer.saved or "the one training started "
                     "from (none was written by this run)")
        raise


def main(args: Any) -> dict[str, Any]:
    """Train or evaluate; joins (and afterwards leaves) the process group when launched distributed."""
    created_group = init_distributed_mode(args)
    stats = run(args)
    if created_group:
        cleanup_distributed()
    return stats


if __name__ == "__main__":
    main(parse_args(sys.argv[1:], "Train or evaluate an RVOS model"))
