"""Train (and validate) any registered method; `--eval` scores a checkpoint only. torchrun-ready."""
from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import datasets
from engine import train_one_epoch
from models import build_model
from models.registry import get_method
from opts import parse_args
from util.checkpoint import load_checkpoint, load_model_weights, model_state_from_checkpoint, save_checkpoint
from util.dist import get_rank, get_world_size, init_distributed_mode, is_main_process
from util.logging import append_json_line, setup_logging, write_json_atomic
from util.misc import collate_fn

logger = logging.getLogger("main")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _match(name: str, keywords: list[str]) -> bool:
    return any(k in name for k in keywords)


def build_param_groups(model: nn.Module, args: Any) -> list[dict[str, Any]]:
    """Upstream's groups by name substring: default, backbone, text encoder, linear projections."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    special = args.lr_backbone_names + args.lr_text_encoder_names + args.lr_linear_proj_names
    groups = [
        {"params": [p for n, p in named if not _match(n, special)], "lr": args.lr},
        {"params": [p for n, p in named if _match(n, args.lr_backbone_names)], "lr": args.lr_backbone},
        {"params": [p for n, p in named if _match(n, args.lr_text_encoder_names)], "lr": args.lr_text_encoder},
        {"params": [p for n, p in named if _match(n, args.lr_linear_proj_names)],
         "lr": args.lr * args.lr_linear_proj_mult},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, args: Any) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    method = get_method(args.method)
    groups = method.param_groups(model, args) if hasattr(method, "param_groups") else build_param_groups(model, args)
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_drop, gamma=0.1)


def load_initial_weights(model: nn.Module, args: Any) -> None:
    """--pretrained_weights: fine-tune from a pre-trained checkpoint, re-initialising the class heads."""
    state = model_state_from_checkpoint(load_checkpoint(args.pretrained_weights))
    state = {k: v for k, v in state.items() if not k.startswith("class_embed.")}
    missing, unexpected, mismatched = load_model_weights(model, state, get_method(args.method).official_key_map)
    logger.info("loaded %s: %d missing (class heads re-initialised), %d unexpected, %d shape mismatches",
                args.pretrained_weights, len(missing), len(unexpected), len(mismatched))
    if mismatched:
        raise ValueError(f"{args.pretrained_weights}: shape mismatches, e.g. {mismatched[:3]}")


def resume(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, args: Any) -> None:
    """Restore weights and, unless --eval, optimiser, schedule and epoch."""
    ckpt = load_checkpoint(args.resume)
    missing, unexpected, mismatched = load_model_weights(model, model_state_from_checkpoint(ckpt),
                                                         get_method(args.method).official_key_map)
    if missing or unexpected or mismatched:
        logger.warning("resume %s: missing %s, unexpected %s, mismatched %s", args.resume, missing[:5],
                       unexpected[:5], mismatched[:5])
    if not args.eval and all(k in ckpt for k in ("optimizer", "lr_scheduler", "epoch")):
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        args.start_epoch = int(ckpt["epoch"]) + 1


def make_loader(dataset: Any, args: Any, train: bool) -> DataLoader:
    if args.distributed:
        sampler = datasets.samplers.DistributedSampler(dataset, shuffle=train, seed=args.seed)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    batch_sampler = torch.utils.data.BatchSampler(sampler, args.batch_size, drop_last=train)
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=args.num_workers,
                      persistent_workers=args.num_workers > 0, worker_init_fn=_seed_worker)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def evaluate(model: nn.Module, postprocessors: dict[str, nn.Module], args: Any,
             device: torch.device) -> Optional[dict[str, Any]]:
    """The dataset's own evaluation protocol (registered in datasets/), or None if it has nothing to score."""
    evaluator = datasets.get_evaluator(args.dataset_file)
    return None if evaluator is None else evaluator(model, postprocessors, args, device)


def main(args: Any) -> dict[str, Any]:
    init_distributed_mode(args)
    setup_logging(args.output_dir, get_rank())
    output_dir = Path(args.output_dir)
    seed_everything(args.seed + get_rank())
    device = torch.device(args.device if not args.distributed or args.device == "cpu" else f"cuda:{args.gpu}")
    logger.info("args: %s", vars(args))

    model, criterion, postprocessors = build_model(args)
    model.to(device)
    criterion.to(device)
    model_without_ddp = model
    if args.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu] if device.type == "cuda" else None,
                                                    find_unused_parameters=getattr(args, "find_unused_parameters", False))
        model_without_ddp = model.module
    n_params = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)
    logger.info("method %s: %d trainable parameters", args.method, n_params)
    optimizer, scheduler = build_optimizer(model_without_ddp, args)

    if args.pretrained_weights:
        load_initial_weights(model_without_ddp, args)
    if args.resume:
        resume(model_without_ddp, optimizer, scheduler, args)

    if args.eval:
        stats = evaluate(model_without_ddp, postprocessors, args, device)
        if stats is None:
            raise SystemExit(f"--eval: dataset {args.dataset_file!r} has no annotated split to score locally; use "
                             "the inference scripts to produce predictions instead")
        if is_main_process():
            write_json_atomic(output_dir / "eval.json", stats)
            logger.info("evaluation: %s", {k: v for k, v in stats.items() if isinstance(v, (int, float))})
        return stats

    train_set = datasets.build_dataset("train", args)
    loader = make_loader(train_set, args, train=True)
    writer = _tensorboard(output_dir) if is_main_process() else None
    global_step = [args.start_epoch * len(loader)]

    def on_step(it: int, stats: dict[str, float]) -> None:
        global_step[0] += 1
        if writer is not None and it % args.print_freq == 0:
            for k, v in stats.items():
                writer.add_scalar(f"train/{k}", v, global_step[0])

    stats: dict[str, Any] = {}
    for epoch in range(args.start_epoch, args.epochs):
        if hasattr(loader.batch_sampler.sampler, "set_epoch"):
            loader.batch_sampler.sampler.set_epoch(epoch)
        start = time.time()
        train_stats = train_one_epoch(model, criterion, loader, optimizer, device, epoch, args.clip_max_norm,
                                      args.print_freq, on_step)
        scheduler.step()
        record: dict[str, Any] = {"epoch": epoch, "epoch_time_s": time.time() - start,
                                  **{f"train_{k}": v for k, v in train_stats.items()}}
        if is_main_process():
            state = {"model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                     "lr_scheduler": scheduler.state_dict(), "epoch": epoch, "args": args}
            save_checkpoint(state, output_dir / "checkpoint.pth")
        if args.eval_every and (epoch + 1) % args.eval_every == 0:
            stats = evaluate(model_without_ddp, postprocessors, args, device) or {}
            scalars = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
            record.update({f"val_{k}": v for k, v in scalars.items()})
            if writer is not None:
                for k, v in scalars.items():
                    writer.add_scalar(f"val/{k}", v, epoch)
        if is_main_process():
            append_json_line(output_dir / "log.txt", record)
            logger.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
    if writer is not None:
        writer.close()
    return stats


def _tensorboard(output_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


if __name__ == "__main__":
    main(parse_args(sys.argv[1:], "Train or evaluate an RVOS model"))
