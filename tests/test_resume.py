"""Exact resume: SIGKILL mid-epoch + `--resume auto` equals an uninterrupted run; non-finite losses; samplers.

The kill test trains a tiny model on CPU with dropout and photometric augmentation on, one loader worker,
and a checkpoint every iteration. Run B is SIGKILLed once a checkpoint from the middle of its second
epoch exists (a newer, damaged checkpoint file and a leftover temporary file are then planted next to it);
run C resumes with `--resume auto`. C's final weights and optimiser state must equal those of run A, which
was never interrupted, bit for bit: data order, sample augmentation, dropout masks and the LR schedule all
continue exactly.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import datasets
import main as main_module
from datasets.samplers import DistributedSampler
from engine import NonFiniteBudget, NonFiniteLossError, train_one_epoch
from opts import parse_args
from util.checkpoint import (capture_rng_state, find_resume_checkpoint, load_checkpoint, restore_rng_state,
                             save_checkpoint)
from util.misc import NestedTensor

ROOT = Path(__file__).resolve().parents[1]


def _flags(tmp: Path, tiny_flags: list[str], out: Path) -> list[str]:
    return tiny_flags + [
        "--dataset_file", "synthetic", "--synthetic_path", str(tmp / "synthetic"), "--synthetic_train_videos", "1",
        "--synthetic_valid_videos", "1", "--synthetic_frames", "4", "--synthetic_size", "64", "64",
        "--train_short_sides", "56", "64", "--max_size", "64", "--crop_short_sides", "64", "--crop_range", "48", "64",
        "--eval_short_side", "64", "--num_workers", "1", "--batch_size", "2", "--epochs", "2", "--lr_drop", "1",
        "--eval_every", "0", "--print_freq", "1", "--lr_backbone", "0", "--output_dir", str(out)]


def _progress(path: Path) -> dict[str, int] | None:
    try:
        return load_checkpoint(path)["progress"]
    except (FileNotFoundError, RuntimeError, KeyError):
        return None


def _start_main(flags: list[str], log: Path) -> subprocess.Popen:
    """main.py in a subprocess with one thread (all runs then use the same kernels), stderr to `log`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "main.py", *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)


def _kill_at_mid_epoch_checkpoint(proc: subprocess.Popen, checkpoint: Path, log: Path) -> dict[str, int]:
    """SIGKILL proc as soon as `checkpoint` was written in the middle of epoch 1; returns that progress."""
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            progress = _progress(checkpoint)
            if progress and progress["epoch"] == 1 and progress["position"] > 0:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return progress
            time.sleep(0.05)
        raise AssertionError(f"no mid-epoch checkpoint before the run ended: {log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_epoch_then_resume_auto_equals_uninterrupted_run(tmp_path: Path, tiny_flags: list[str]) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    logs = {name: tmp_path / f"{name}.log" for name in ("straight", "killed", "resumed")}
    datasets.build_dataset("train", parse_args(_flags(tmp_path, tiny_flags, straight)))  # generated once, here

    reference_run = _start_main(_flags(tmp_path, tiny_flags, straight), logs["straight"])  # runs alongside
    flags = _flags(tmp_path, tiny_flags, killed) + ["--save_every_iters", "1"]
    # --epochs 40: still running when killed; the schedule depends on --lr_drop only
    at_kill = _kill_at_mid_epoch_checkpoint(_start_main(flags + ["--epochs", "40"], logs["killed"]),
                                            killed / "checkpoint.pth", logs["killed"])
    assert reference_run.wait(timeout=600) == 0, logs["straight"].read_text()[-3000:]
    reference = load_checkpoint(straight / "checkpoint.pth")

    latest = killed / "checkpoint.pth"
    (killed / "checkpoint9999.pth").write_bytes(latest.read_bytes()[:1000])  # newer but truncated
    (killed / "checkpoint.pth.abc.tmp").write_bytes(b"partial")  # what a kill during a save leaves
    resumed_from = find_resume_checkpoint(killed)
    assert resumed_from is not None and resumed_from[0] == latest
    progress = resumed_from[1]["progress"]
    assert progress["epoch"] == 1 and 0 < progress["position"] and progress["position"] >= at_kill["position"]

    resumed_run = _start_main(flags + ["--resume", "auto"], logs["resumed"])
    assert resumed_run.wait(timeout=600) == 0, logs["resumed"].read_text()[-3000:]
    stderr = logs["resumed"].read_text()
    assert "skipping" in stderr and "checkpoint9999.pth" in stderr
    final = load_checkpoint(latest)
    assert final["epoch"] == reference["epoch"] == 1
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key
    for slot, state in reference["optimizer"]["state"].items():
        assert torch.equal(final["optimizer"]["state"][slot]["exp_avg"], state["exp_avg"]), slot
    assert final["lr_scheduler"] == reference["lr_scheduler"]


class ToyModel(nn.Module):
    """A linear map of the clip mean: enough to exercise the training loop without a real model."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, samples: NestedTensor, captions: list[str], targets: list[dict]) -> dict[str, torch.Tensor]:
        return {"pred": self.linear(samples.tensors.mean().view(1, 1))}


class ToyCriterion(nn.Module):
    """Squared error; NaN at the iterations listed in `nan_at` (counted per call)."""

    weight_dict = {"loss_l2": 1.0, "loss_aux": 0.5}

    def __init__(self, nan_at: set[int]) -> None:
        super().__init__()
        self.nan_at, self.calls = nan_at, 0

    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        loss = (outputs["pred"] - 1.0).pow(2).sum()
        if self.calls in self.nan_at:
            loss = loss * float("nan")
        self.calls += 1
        return {"loss_l2": loss, "loss_aux": torch.ones(())}


def toy_batches(n: int) -> list[tuple[NestedTensor, list[dict[str, Any]]]]:
    return [(NestedTensor(torch.full((1, 1, 3, 4, 4), float(i)), None), [{"caption": "x"}]) for i in range(n)]


def test_nonfinite_loss_names_iteration_and_terms() -> None:
    model = ToyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 3 iteration 7: loss is nan \(loss_aux=1, loss_l2=nan\)"):
        train_one_epoch(model, ToyCriterion({2}), toy_batches(4), optimizer, torch.device("cpu"), 3,
                        start_iteration=5)


def test_skip_nonfinite_skips_without_a_step_then_stops_when_spent() -> None:
    model = ToyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    budget = NonFiniteBudget(limit=2)
    steps: list[int] = []
    stats = train_one_epoch(model, ToyCriterion({1, 3}), toy_batches(5), optimizer, torch.device("cpu"), 0,
                            on_step=lambda it, s: steps.append(it), nonfinite=budget)
    assert steps == [0, 2, 4] and budget.skipped == 2 and stats["nonfinite_skipped"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(NonFiniteLossError, match=r"iteration 0.*2 earlier non-finite batches were skipped"):
        train_one_epoch(model, ToyCriterion({0}), toy_batches(2), optimizer, torch.device("cpu"), 1,
                        nonfinite=budget)


def test_nonfinite_loss_in_main_keeps_the_last_good_checkpoint(tmp_path: Path, tiny_flags: list[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN at global step 3 stops main(); checkpoint.pth is still the one written after step 2."""
    original = main_module.build_model

    def build_with_nan_loss(args: Any) -> Any:
        model, criterion, postprocessors = original(args)
        forward = criterion.forward
        calls = [0]

        def nan_at_third_step(outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
            losses = forward(outputs, targets)
            calls[0] += 1
            return {k: v * float("nan") for k, v in losses.items()} if calls[0] == 3 else losses

        criterion.forward = nan_at_third_step
        return model, criterion, postprocessors

    monkeypatch.setattr(main_module, "build_model", build_with_nan_loss)
    out = tmp_path / "out"
    args = parse_args(_flags(tmp_path, tiny_flags, out) + ["--num_workers", "0", "--save_every_iters", "1"])
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 iteration 2: loss is nan \(loss_bbox=nan"):
        main_module.main(args)
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["progress"] == {"epoch": 0, "position": 4, "iteration": 2, "world_size": 1, "batch_size": 2}
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_sampler_global_batches_do_not_depend_on_the_split_over_ranks() -> None:
    data = list(range(11))
    one = list(DistributedSampler(data, num_replicas=1, rank=0, seed=3))
    ranks = [list(DistributedSampler(data, num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert [i for pair in zip(*ranks) for i in pair] == one + one[:1], "rank r takes global positions r, r+2, ..."
    seeded = [list(DistributedSampler(data, num_replicas=2, rank=r, seed=3, seed_samples=True)) for r in range(2)]
    assert [idx for idx, _ in seeded[0]] == ranks[0]
    assert len({seed for part in seeded for _, seed in part[:5]}) == 10, "one seed per global position"


def test_sampler_resumes_mid_epoch_on_the_same_or_another_world_size() -> None:
    data = list(range(20))
    full = [list(DistributedSampler(data, num_replicas=2, rank=r, seed=0, seed_samples=True)) for r in range(2)]
    for r in range(2):
        resumed = DistributedSampler(data, num_replicas=2, rank=r, seed=0, seed_samples=True)
        resumed.set_epoch(0, start=6)
        assert list(resumed) == full[r][3:] and len(resumed) == 7
    global_order = [item for pair in zip(*full) for item in pair]
    quad = [DistributedSampler(data, num_replicas=4, rank=r, seed=0, seed_samples=True) for r in range(4)]
    for sampler in quad:
        sampler.set_epoch(0, start=6)
    assert sorted(item for s in quad for item in s) == sorted(global_order[6:18]), "same remaining samples"
    with pytest.raises(ValueError, match="start position"):
        quad[0].set_epoch(0, start=21)


def test_changed_lr_drop_takes_effect_on_resume() -> None:
    """Upstream kept the checkpoint's milestones whatever --lr_drop said (spec 11.1 #5)."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [6, 8], gamma=0.1)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = {"optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict()}
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [3], gamma=0.1)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["lr_scheduler"])
    main_module.apply_lr_drop(optimizer, scheduler, [3])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1), "epoch 4 is past the new milestone 3"
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1) and sorted(scheduler.milestones) == [3]


def test_rng_state_roundtrip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    state = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    save_checkpoint({"rng": [state]}, tmp_path / "rng.pth")
    restore_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_resume_auto_prefers_newest_readable_checkpoint(tmp_path: Path) -> None:
    assert find_resume_checkpoint(tmp_path) is None
    save_checkpoint({"epoch": 0}, tmp_path / "checkpoint0000.pth")
    time.sleep(0.01)
    save_checkpoint({"epoch": 1}, tmp_path / "checkpoint.pth")
    path, ckpt = find_resume_checkpoint(tmp_path)
    assert path.name == "checkpoint.pth" and ckpt["epoch"] == 1
    time.sleep(0.01)
    (tmp_path / "checkpoint.pth").write_bytes(b"")  # damaged newest file: fall back to the snapshot
    path, ckpt = find_resume_checkpoint(tmp_path)
    assert path.name == "checkpoint0000.pth" and ckpt["epoch"] == 0
