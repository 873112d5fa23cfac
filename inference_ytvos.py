"""Ref-YouTube-VOS inference (spec 7.1): a mask per frame for every (video, expression), and the upload zip.

    python inference_ytvos.py --resume CKPT --output_dir DIR [--ytvos_path data/ref-youtube-vos]
        [--split valid|test] [--clip_len N] [--ngpu N] [--device cpu] [--visualize] [--overwrite]
        [model flags, e.g. --with_box_refine --binary --backbone resnet50, and --method NAME]

Writes DIR/Annotations/<video>/<exp_id>/<frame>.png (single-channel, 0/255) and DIR/submission.zip
with Annotations/ at its root, ready for the CodaLab server. Each expression's folder appears in one
rename when complete, so re-running skips what is already written (unless --overwrite).

Protocol as upstream: every frame listed in meta_expressions, shorter side --eval_short_side (360),
the whole video as one clip (``--clip_len N`` runs chunks of N frames to bound memory; the query slot
is still chosen once from scores averaged over all frames unless ``--query_selection chunk``), masks
resized bilinearly to the original size and thresholded at --threshold. ``--split valid`` drops the
videos of meta_expressions/test (202 remain in the official release); ``--split test`` reads
<root>/test (upstream's assertion made it fail, spec 11.1 #18). ``--ngpu N`` runs N worker processes,
one per GPU; on the CPU one process.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import zipfile
from argparse import Namespace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from datasets.ytvos import VideoExpressionSet, load_frame, transforms_from_args
from util.inference import (ProgressFn, build_inference_model, cli_main, folder_has_files, inference_caption,
                            predict_expression, run_pending, write_folder_atomically)
from util.visualize import PALETTE, draw_caption, overlay_mask

logger = logging.getLogger("inference_ytvos")

ANNOTATIONS = "Annotations"


def expression_set(args: Namespace) -> VideoExpressionSet:
    """Every (video, expression) of --split, frames transformed for inference."""
    return VideoExpressionSet(Path(args.ytvos_path), args.split, transforms_from_args(args.split, args))


def expression_folder(output_dir: Path, video: str, exp_id: str) -> Path:
    return output_dir / ANNOTATIONS / video / exp_id


def pending_items(dataset: VideoExpressionSet, output_dir: Path, overwrite: bool) -> list[int]:
    """Indices of the expressions still to compute (all of them with --overwrite)."""
    return [i for i, (video, exp_id) in enumerate(dataset.items)
            if overwrite or not folder_has_files(expression_folder(output_dir, video, exp_id),
                                                 dataset.videos[video]["frames"])]


def write_masks(folder: Path, names: list[str], masks: np.ndarray) -> None:
    """One 'L' PNG (0/255) per frame."""
    for name, mask in zip(names, masks):
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}.png")


def write_overlays(folder: Path, frame_dir: Path, names: list[str], masks: np.ndarray, caption: str) -> None:
    """--visualize: each frame with the mask blended in, outlined, and the expression as caption."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in zip(names, masks):
        image = np.asarray(load_frame(frame_dir / f"{name}.jpg"))
        Image.fromarray(draw_caption(overlay_mask(image, mask, PALETTE[0]), caption)).save(folder / f"{name}.jpg")


def process_items(worker: int, device: torch.device, indices: list[int], args: Namespace,
                  progress: ProgressFn) -> None:
    """Worker: build the model on `device` and write the masks of the expressions `indices`."""
    dataset = expression_set(args)
    model = build_inference_model(args, device)
    output_dir = Path(args.output_dir)
    clip_len = args.clip_len or 0
    per_chunk = args.query_selection == "chunk"
    for index in indices:
        item = dataset[index]
        caption = inference_caption(item["caption"], args)
        probs, _ = predict_expression(model, item["frames"], caption, item["size"], item["orig_size"], device,
                                      clip_len, per_chunk, amp=args.amp)
        masks = (probs > args.threshold).cpu().numpy()
        names = item["frame_names"]
        write_folder_atomically(expression_folder(output_dir, item["video_id"], item["exp_id"]),
                                lambda tmp: write_masks(tmp, names, masks))
        if args.visualize:
            write_overlays(output_dir / "visualize" / item["video_id"] / item["exp_id"],
                           Path(args.ytvos_path) / args.split / "JPEGImages" / item["video_id"], names, masks,
                           caption)
        progress(1)


def write_submission_zip(output_dir: Path, dataset: VideoExpressionSet) -> Path:
    """DIR/submission.zip holding Annotations/<video>/<exp_id>/<frame>.png for every expression of the split."""
    missing = pending_items(dataset, output_dir, overwrite=False)
    if missing:
        video, exp_id = dataset.items[missing[0]]
        raise RuntimeError(f"{len(missing)} expressions have no complete masks yet (e.g. {video}/{exp_id}); "
                           "run the inference again to finish them")
    path = output_dir / "submission.zip"
    fd, tmp = tempfile.mkstemp(prefix=".submission.", suffix=".zip", dir=output_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for video, exp_id in dataset.items:
                for name in dataset.videos[video]["frames"]:
                    arcname = f"{ANNOTATIONS}/{video}/{exp_id}/{name}.png"
                    archive.write(output_dir / arcname, arcname)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run(args: Namespace) -> str:
    """Predict what is missing, then write the zip; returns the line to print."""
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.query_selection is None:
        args.query_selection = "video"
    dataset = expression_set(args)
    todo = pending_items(dataset, output_dir, args.overwrite)
    logger.info("%s %s: %d videos, %d expressions, %d to compute", args.ytvos_path, args.split, len(dataset.videos),
                len(dataset), len(todo))
    run_pending(process_items, todo, args, desc="Ref-YTVOS", unit="expression")
    path = write_submission_zip(output_dir, dataset)
    return f"Submission written to {path} (upload it to the Ref-YouTube-VOS CodaLab server)"


def main(argv: Optional[list[str]] = None) -> int:
    return cli_main(argv, "Ref-YouTube-VOS inference: masks and submission zip", run)


if __name__ == "__main__":
    sys.exit(main())
