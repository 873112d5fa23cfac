"""Engine and main.py: optimisation lowers the loss, checkpoints round-trip, resume continues, --eval scores."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

import datasets
from engine import train_one_epoch
from main import build_optimizer, cosine_factor, main
from models import build_model
from models.registry import get_method
from opts import parse_args
from util.checkpoint import load_checkpoint
from util.misc import collate_fn
from util.precision import forward_precision


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


def test_adamw_runs_fused_on_cpu_unless_asked_for_foreach(tiny_flags: list[str]) -> None:
    model, _, _ = build_model(parse_args(tiny_flags))
    fused, _ = build_optimizer(model, parse_args(tiny_flags))
    foreach, _ = build_optimizer(model, parse_args(tiny_flags + ["--adamw_impl", "foreach"]))
    assert fused.defaults["fused"] is True and not fused.defaults.get("foreach")
    assert not foreach.defaults["fused"] and foreach.defaults["foreach"] is True


def test_fused_and_foreach_adamw_take_the_same_steps(tiny_flags: list[str]) -> None:
    """Same update up to float rounding, so switching the kernel never changes what a run learns."""
    torch.manual_seed(0)
    model, _, _ = build_model(parse_args(tiny_flags))
    twin = copy.deepcopy(model)
    opt_a, _ = build_optimizer(model, parse_args(tiny_flags + ["--adamw_impl", "fused"]))
    opt_b, _ = build_optimizer(twin, parse_args(tiny_flags + ["--adamw_impl", "foreach"]))
    for step in range(3):
        for m in (model, twin):
            torch.manual_seed(step)
            for p in m.parameters():
                p.grad = torch.randn_like(p) if p.requires_grad else None
        opt_a.step()
        opt_b.step()
    with torch.no_grad():
        moved = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), twin.parameters()))
    assert moved < 1e-6


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


def test_bf16_autocast_forward_with_float32_losses(synthetic_flags: list[str]) -> None:
    """--amp bf16: the model computes in bfloat16, the criterion sees float32 outputs, and training still learns."""
    torch.manual_seed(0)
    args = parse_args(synthetic_flags + ["--lr", "1e-3", "--lr_backbone", "1e-3", "--no_photometric",
                                         "--amp", "bf16"])
    model, criterion, _ = build_model(args)
    optimizer, _ = build_optimizer(model, args)
    dataset = datasets.build_dataset("train", args)
    batch = collate_fn([dataset[0], dataset[1]])
    head_dtypes, loss_input_dtypes, losses = set(), set(), []
    model.class_embed[-1].register_forward_hook(lambda module, inputs, output: head_dtypes.add(output.dtype))

    def recording_criterion(outputs: dict, targets: list) -> dict:
        loss_input_dtypes.update(v.dtype for v in outputs.values() if isinstance(v, torch.Tensor))
        return criterion(outputs, targets)

    recording_criterion.weight_dict = criterion.weight_dict
    recording_criterion.train = criterion.train
    train_one_epoch(model, recording_criterion, [batch] * 12, optimizer, torch.device("cpu"), 0, 0.1,
                    on_step=lambda it, stats: losses.append(stats["loss"]), amp=args.amp)
    assert head_dtypes == {torch.bfloat16}
    assert loss_input_dtypes == {torch.float32}
    assert all(math.isfinite(v) for v in losses) and min(losses[-3:]) < 0.8 * losses[0], losses
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="--amp 'fp8'"):
        forward_precision(torch.device("cpu"), "fp8")


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


def test_cosine_schedule_decays_every_iteration_and_resumes_exactly(synthetic_flags: list[str],
                                                                    tmp_path: Path) -> None:
    flags = synthetic_flags + ["--lr_schedule", "cosine", "--epochs", "2"]
    lr = parse_args(flags).lr
    main(parse_args(flags))
    out = tmp_path / "out"
    half, end = load_checkpoint(out / "checkpoint0000.pth"), load_checkpoint(out / "checkpoint.pth")
    per_epoch = half["lr_scheduler"]["last_epoch"]
    assert per_epoch > 1 and end["lr_scheduler"]["last_epoch"] == 2 * per_epoch
    assert half["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5 * lr)
    assert end["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert lr > log[0]["train_lr"] > 0.5 * lr > log[1]["train_lr"] > 0.0

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    main(parse_args(flags + ["--output_dir", str(resumed_dir), "--resume", str(out / "checkpoint0000.pth")]))
    resumed = load_checkpoint(resumed_dir / "checkpoint.pth")
    assert resumed["lr_scheduler"]["last_epoch"] == 2 * per_epoch
    for key, value in end["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_cosine_factor_runs_from_one_to_zero() -> None:
    factor = cosine_factor(10)
    assert [round(factor(i), 6) for i in (0, 5, 10, 12)] == [1.0, 0.5, 0.0, 0.0]
    assert all(factor(i) > factor(i + 1) for i in range(10))


def test_training_with_several_expressions_per_clip_runs_each_expression(synthetic_flags: list[str],
                                                                         tmp_path: Path) -> None:
    """main.py with --expressions_per_clip 3: the loader gives ~3 targets per clip and an epoch trains."""
    args = parse_args(synthetic_flags + ["--epochs", "1", "--expressions_per_clip", "3"])
    dataset = datasets.build_dataset("train", args)
    samples, targets = collate_fn([dataset[0], dataset[1]])
    objects = {(t["video_id"], t["clip_index"]) for t in targets}
    assert samples.tensors.shape[0] == 2 and len(targets) > 2 and len(objects) == 2
    main(args)
    log = json.loads((tmp_path / "out" / "log.txt").read_text().splitlines()[0])
    assert log["epoch"] == 0 and torch.isfinite(torch.tensor(log["train_loss"]))


def test_batched_chunks_predict_what_one_chunk_at_a_time_predicts(tiny_flags: list[str]) -> None:
    from util.inference import chunk_slices, equal_length_groups, predict_expression

    model, _, _ = build_model(parse_args(tiny_flags))
    model.eval()
    torch.manual_seed(0)
    frames = torch.randn(7, 3, 96, 96)
    runs = {}
    for per_batch in (1, 8):
        runs[per_batch] = predict_expression(model, frames, "a red circle", (96, 96), (80, 70), torch.device("cpu"), 2,
                                             per_chunk_query=True, chunks_per_batch=per_batch)
    (one, one_queries), (batched, batched_queries) = runs[1], runs[8]
    assert one.shape == batched.shape == (7, 80, 70)
    torch.testing.assert_close(batched, one, rtol=1e-4, atol=1e-5)
    assert torch.equal(one_queries, batched_queries)
    lengths = [[s.stop - s.start for s in g] for g in equal_length_groups(chunk_slices(7, 2), 2)]
    assert lengths == [[2, 2], [2], [1]]


def test_bf16_inference_matches_float32(tiny_flags: list[str]) -> None:
    """--amp bf16 at inference: float32 probabilities within bfloat16 rounding of the float32 run."""
    from util.inference import predict_expression

    model, _, _ = build_model(parse_args(tiny_flags))
    model.eval()
    torch.manual_seed(0)
    frames = torch.randn(4, 3, 96, 96)
    runs = {amp: predict_expression(model, frames, "a red circle", (96, 96), (80, 70), torch.device("cpu"), 2,
                                    amp=amp)[0] for amp in ("none", "bf16")}
    assert runs["bf16"].dtype == torch.float32 and runs["bf16"].shape == runs["none"].shape
    difference = (runs["bf16"] - runs["none"]).abs()
    assert 0 < float(difference.max()) < 0.1 and float(difference.mean()) < 0.01
