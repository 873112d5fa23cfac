"""Quickstart training-step throughput on the CPU: process layout and step options, side by side.

    python bench/bench_train_step.py [--data_dir data/synthetic] [--steps 40] [--warmup 10]

Every case trains the quickstart model (tools/quickstart.py flags) on the synthetic train split with 4 clips
per optimiser step, in fresh processes started one after another (the machine is never shared between cases):

- session-1 layout: 2 DDP processes (gloo) x 1 thread x 2 clips, torch's default AdamW, head dropout 0.1,
  text encoder in train mode (the quickstart before these options existed);
- the same options in 1 process x 2 threads x 4 clips;
- 1 process x 2 threads with each option switched on in turn: fused AdamW, --head_dropout 0,
  --frozen_text_eval (eval-mode text encoder + per-caption cache);
- the quickstart with --expressions_per_clip 2 and 3 (the same 4 clips carry more expressions, one backbone
  pass per clip);
- the quickstart with --amp bf16 (bfloat16 autocast forward, float32 losses and optimiser).

Each step is engine.train_one_epoch's, the one main.py runs (forward, losses, backward, clipping, AdamW,
logging reductions). The table gives the mean ms per step after --warmup steps, the speed-up over the first
case, the mean number of expressions (targets) per step and expressions trained per second.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.quickstart import CLIPS_PER_STEP, quickstart_flags  # noqa: E402

OLD_OPTIONS = ["--adamw_impl", "default", "--head_dropout", "0.1"]
QUICKSTART = ["--adamw_impl", "fused", "--head_dropout", "0", "--frozen_text_eval"]
CASES: list[tuple[str, int, list[str]]] = [
    ("2 DDP procs x 1 thread, session-1 options", 2, OLD_OPTIONS),
    ("1 proc x 2 threads, session-1 options", 1, OLD_OPTIONS),
    ("  + fused AdamW", 1, ["--adamw_impl", "fused", "--head_dropout", "0.1"]),
    ("  + --head_dropout 0", 1, ["--adamw_impl", "fused", "--head_dropout", "0"]),
    ("  + --frozen_text_eval (quickstart now)", 1, QUICKSTART),
]
CASES += [(f"  + --expressions_per_clip {k}", 1, QUICKSTART + ["--expressions_per_clip", str(k)]) for k in (2, 3)]
CASES += [("  + --amp bf16 (K = 1)", 1, QUICKSTART + ["--amp", "bf16"])]


def build_training(flags: list[str]) -> tuple[Any, torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Any]:
    """Args, model, criterion, optimiser and train dataset of the quickstart configuration.

    ``--adamw_impl default`` stands for torch's own choice (what AdamW did before --adamw_impl existed).
    """
    from datasets import build_dataset
    from main import build_optimizer
    from models import build_model
    from models.registry import get_method
    from opts import parse_args

    default_adamw = "--adamw_impl" in flags and flags[flags.index("--adamw_impl") + 1] == "default"
    if default_adamw:
        at = flags.index("--adamw_impl")
        flags = flags[:at] + flags[at + 2:]
    args = parse_args(flags)
    torch.manual_seed(0)
    model, criterion, _ = build_model(args)
    if default_adamw:
        optimizer = torch.optim.AdamW(get_method(args.method).param_groups(model, args), lr=args.lr,
                                      weight_decay=args.weight_decay)
    else:
        optimizer, _ = build_optimizer(model, args)
    return args, model, criterion, optimizer, build_dataset("train", args)


def counting_targets(batches: Iterator[tuple[Any, list]], counts: list[int]) -> Iterator[tuple[Any, list]]:
    """The batches unchanged, appending each batch's number of targets (expressions) to ``counts``."""
    for batch in batches:
        counts.append(len(batch[1]))
        yield batch


def worker(rank: int, world: int, flags: list[str], threads: int, steps: int, warmup: int, port: int,
           result: Path) -> None:
    """Times engine.train_one_epoch (the training step main.py runs) over ``steps`` batches after ``warmup``."""
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    from engine import train_one_epoch
    from util.misc import collate_fn

    args, model, criterion, optimizer, dataset = build_training(flags)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    generator = torch.Generator().manual_seed(rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=CLIPS_PER_STEP // world, shuffle=True,
                                         collate_fn=collate_fn, generator=generator)
    batches = iter(loader)
    device = torch.device("cpu")
    train_one_epoch(net, criterion, itertools.islice(batches, warmup), optimizer, device, 0, args.clip_max_norm,
                    amp=args.amp)
    targets_per_step: list[int] = []
    started = time.perf_counter()
    train_one_epoch(net, criterion, counting_targets(itertools.islice(batches, steps), targets_per_step), optimizer,
                    device, 0, args.clip_max_norm, amp=args.amp)
    elapsed = time.perf_counter() - started
    if rank == 0:
        expressions = sum(targets_per_step) * world / steps
        result.write_text(f"{elapsed / steps * 1000:.2f} {expressions:.2f}")
    if world > 1:
        dist.destroy_process_group()


def time_case(flags: list[str], world: int, steps: int, warmup: int, port: int) -> tuple[float, float]:
    """Mean ms per 4-clip step of one case, run in fresh processes, and the mean expressions per step."""
    threads = 2 // world
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "ms"
        mp.start_processes(worker, args=(world, flags, threads, steps, warmup, port, result), nprocs=world,
                           start_method="spawn")
        ms, expressions = result.read_text().split()
        return float(ms), float(expressions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(ROOT / "data" / "synthetic"), help="generated there if missing")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        base = quickstart_flags(Path(out), Path(args.data_dir), 1)
        base = [f for f in base if f != "--frozen_text_eval"]
        rows = []
        for i, (name, world, options) in enumerate(CASES):
            rows.append((name, time_case(base + options, world, args.steps, args.warmup, 29610 + i)))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"{args.steps} steps of {CLIPS_PER_STEP} clips after {args.warmup} warm-up steps")
    print(f"| {'case':<44} | ms/step | speed-up | expressions/step | expressions/s |")
    print(f"|{'-' * 46}|---------|----------|------------------|---------------|")
    for name, (ms, expressions) in rows:
        print(f"| {name:<44} | {ms:7.1f} | {rows[0][1][0] / ms:7.2f}x | {expressions:16.2f} | "
              f"{expressions * 1000 / ms:13.1f} |")


if __name__ == "__main__":
    main()
