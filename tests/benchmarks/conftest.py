"""Fixtures of the benchmark tests: a tiny trained-format checkpoint and the tiny benchmark trees."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rvos_testing import tiny_model_flags


@pytest.fixture(scope="session")
def tiny_session_flags(tiny_roberta: Path) -> list[str]:
    """Tiny model flags plus small sizes (64-pixel shorter side: the extra 1/64 level keeps > 1 pixel)."""
    return tiny_model_flags(tiny_roberta) + ["--eval_short_side", "64", "--max_size", "96", "--num_workers", "0"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_session_flags: list[str]) -> Path:
    """A checkpoint in the training format ({'model', 'args', ...}) of a randomly initialised tiny model."""
    from models import build_model
    from opts import parse_args
    from util.checkpoint import save_checkpoint

    torch.manual_seed(0)
    args = parse_args(tiny_session_flags)
    model, _, _ = build_model(args)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    save_checkpoint({"model": model.state_dict(), "args": args, "epoch": 0}, path)
    return path
