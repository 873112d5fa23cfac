"""Engine and main.py: optimisation lowers the loss, checkpoints round-trip, resume continues, --eval scores."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import datasets
from main import build_optimizer, main
from models import build_model
from models.registry import get_method
from opts import parse_args
from util.checkpoint import load_checkpoint
from util.misc import collate_fn


def _synthetic_flags(tmp: Path, tiny_flags: list[str]) -> list[str]:
    return tiny_flags + [
        "--dataset_file", "synthetic", "--synthetic_path", str(tmp / "synthetic"), "--synthetic_train_videos", "3",
        "--synthetic_valid_videos", "2", "--synthetic_frames", "4", "--synthetic_size", "64", "64",
        "--train_short_sides", "64", "--max_size", "64", "--crop_short_sides", "64", "--crop_range", "48", "64",
        "--eval_short_side", "64", "--num_workers", "0", "--batch_size", "2", "--output_dir", str(tmp / "out"),
        "--lr_drop", "1", "--eval_every", "0", "--print_freq", "1",
    ]


@pytest.fixture()
def synthetic_flags(tmp_path: Path, tiny_flags: list[str]) -> list[str]:
    return _synthetic_flags(tmp_path, tiny_flags)


def test_param_groups_follow_upstream_names(tiny_flags: list[str]) -> None:
    args = parse_args(tiny_flags + ["--lr", "1e-3", "--lr_backbone", "1e-4", "--lr_linear_proj_mult", "0.5"])
    model, _, _ = build_model(args)
    groups = get_method(args.method).param_groups(model, args)
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr = {g["lr"]: [names[id(p)] for p in g["params"]] for g in groups}
    assert all("backbone.0" in n for n in by_lr[1e-4])
    assert all("reference_points" in n or "sampling_offsets" in n for n in by_lr[5e-4])
    assert not any("text_encoder" in n or "backbone.0" in n for n in by_lr[1e-3])
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_few_steps_lower_the_loss(synthetic_flags: list[str]) -> None:
    torch.manual_seed(0)
    args = parse_args(synthetic_flags + ["--lr", "1e-3", "--lr_backbone", "1e-3", "--no_photometric"])
    model, criterion, _ = build_model(args)
    optimizer, _ = build_optimizer(model, args)
    dataset = datasets.build_dataset("train", args)
    samples, targets = collate_fn([dataset[0], dataset[1]])
    captions = [t["caption"] for t in targets]
    model.train()
    losses = []
    for _ in range(12):
        loss_dict = criterion(model(samples, captions, targets), targets)
        loss = sum(loss_dict[k] * criterion.weight_dict[k] for k in loss_dict)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.8 * losses[0], losses


def test_train_checkpoint_resume_and_eval(synthetic_flags: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(parse_args(synthetic_flags + ["--epochs", "1"]))
    ckpt_path = out / "checkpoint.pth"
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["epoch"] == 0 and set(ckpt) >= {"model", "optimizer", "lr_scheduler", "epoch", "args"}
    assert not list(out.glob("*.tmp"))
    first = {k: v.clone() for k, v in ckpt["model"].items()}

    args = parse_args(synthetic_flags + ["--epochs", "2", "--resume", str(ckpt_path)])
    main(args)
    assert args.start_epoch == 1
    resumed = load_checkpoint(ckpt_path)
    assert resumed["epoch"] == 1
    assert resumed["lr_scheduler"]["last_epoch"] == 2
    assert any(not torch.equal(first[k], resumed["model"][k]) for k in first if first[k].is_floating_point())
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    assert log[1]["train_lr"] == pytest.approx(parse_args(synthetic_flags).lr * 0.1)

    stats = main(parse_args(synthetic_flags + ["--eval", "--resume", str(ckpt_path)]))
    assert 0.0 <= stats["j"] <= 1.0 and 0.0 <= stats["f"] <= 1.0
    assert stats["jf"] == pytest.approx((stats["j"] + stats["f"]) / 2)
    assert stats["n"] == len(datasets.build_dataset("valid", parse_args(synthetic_flags)))
    assert json.loads((out / "eval.json").read_text())["jf"] == pytest.approx(stats["jf"])
