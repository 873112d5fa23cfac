"""Flags of the run-control subsystem (distributed launch, exact resume, bad-input policy); all ours, not upstream.

``opts.get_args_parser()`` calls :func:`add_run_args`, so every entry point accepts them.
"""
from __future__ import annotations

import argparse


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Add the 'distributed, resume and robustness' flag group to ``parser``."""
    g = parser.add_argument_group("distributed, resume and robustness")
    g.add_argument("--save_every_iters", default=0, type=int,
                   help="ours: also write output_dir/checkpoint.pth every N training iterations (0: only at the "
                        "end of each epoch); `--resume auto` continues exactly from the newest one")
    g.add_argument("--skip_nonfinite", default=0, type=int,
                   help="ours: skip up to N batches whose loss or gradient norm is NaN/inf (no optimiser step) "
                        "before stopping; 0 stops at the first one")
    g.add_argument("--bad_data", default="error", choices=["error", "skip"],
                   help="ours: on unreadable or inconsistent data, stop with an error naming the file and field "
                        "(error), or warn, replace the sample and report a count per epoch (skip)")
    g.add_argument("--find_unused_parameters", action="store_true",
                   help="ours: DistributedDataParallel(find_unused_parameters=True); methods that need it "
                        "declare it themselves, so this is only for experiments")
    g.add_argument("--deterministic", action="store_true",
                   help="ours: deterministic algorithms (torch.use_deterministic_algorithms, cuDNN "
                        "deterministic, no benchmark); slower on GPU")
    g.add_argument("--dist_backend", default="auto", choices=["auto", "nccl", "gloo"],
                   help="ours: process-group backend (auto: nccl on CUDA, gloo on CPU)")
    g.add_argument("--dist_timeout_min", default=60, type=int,
                   help="ours: minutes a collective may wait (rank 0 evaluating or saving) before failing")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", default=None, type=int,
                   help="set by the legacy `python -m torch.distributed.launch` without --use_env; "
                        "LOCAL_RANK from the environment is used otherwise")
