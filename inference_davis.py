"""Ref-DAVIS17 inference (spec 7.2) with a model trained on Ref-YouTube-VOS (no fine-tuning).

    python inference_davis.py --resume CKPT --output_dir DIR [--davis_path data/ref-davis]
        [--ngpu N] [--clip_len 36] [--query_selection chunk|video] [--overwrite] [model flags]

--davis_path is the tree written by tools/data/convert_davis_to_ytvos.py. Each object has four
expressions, one per annotator slot (annot1 first-frame, annot1 full-video, annot2 first-frame, annot2
full-video; expression id = 4 * object rank + slot). For each slot, every object is segmented with its
slot's expression and the objects are merged into one palette PNG per frame:
DIR/valid/anno_<slot>/<video>/<frame>.png, pixel = object id (0 background). Then score each slot with
``eval_davis.py --results_path DIR/valid/anno_<slot>`` and average the four (scripts/dist_test_davis.sh
does all of it); that average is the number papers report.

As upstream: 36-frame chunks (``--clip_len``; default the method's ``davis_clip_len``, 36 for
ReferFormer, 24 for BIFIT), query slot chosen independently per chunk
(``--query_selection video`` chooses it once per video instead), probabilities below --threshold
dropped, a constant background score of 0.1, per-pixel argmax. Unlike upstream the label of an object
is its DAVIS object id rather than its rank in the expression list (equal for DAVIS, whose ids are
1..n), frames keep their own names, and each video's folders appear complete or not at all, so
re-running skips finished videos.
"""
from __future__ import annotations

import logging
import sys
from argparse import Namespace
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datasets.synthetic import davis_palette
from datasets.ytvos import VideoExpressionSet, transforms_from_args
from models.registry import get_method
from util.inference import (ProgressFn, build_inference_model, cli_main, folder_has_files, inference_caption,
                            predict_expression, run_pending, write_folder_atomically)

logger = logging.getLogger("inference_davis")

NUM_ANNOTATOR_SLOTS = 4
BACKGROUND_SCORE = 0.1
DAVIS_CLIP_LEN = 36
SPLIT = "valid"


def expression_set(args: Namespace) -> VideoExpressionSet:
    return VideoExpressionSet(Path(args.davis_path), SPLIT, transforms_from_args(SPLIT, args))


def annotator_slots(expressions: dict[str, dict[str, str]]) -> dict[int, list[tuple[int, str]]]:
    """{slot: [(object id, expression id), ...] in object-id order}; slot = expression id mod 4."""
    slots: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for exp_id, exp in expressions.items():
        slots[int(exp_id) % NUM_ANNOTATOR_SLOTS].append((int(exp["obj_id"]), exp_id))
    for slot, entries in slots.items():
        entries.sort()
        ids = [obj for obj, _ in entries]
        if len(set(ids)) != len(ids):
            raise ValueError(f"annotator slot {slot} has two expressions for one object: {entries}; expression ids "
                             "must be 4 * object rank + slot (tools/data/convert_davis_to_ytvos.py)")
    return slots


def merge_objects(object_probs: Iterable[tuple[int, Tensor]], threshold: float, shape: Sequence[int]) -> Tensor:
    """Per-pixel argmax over [background 0.1, object probabilities >= threshold] -> labels uint8 `shape`.

    Ties go to the earlier entry (background first), as torch.argmax over the stacked maps; with no
    objects every pixel is background.
    """
    best: Optional[Tensor] = None
    labels = torch.zeros(tuple(shape), dtype=torch.uint8)
    for label, probs in object_probs:
        if not 0 < label < 256:
            raise ValueError(f"object id {label} does not fit a palette PNG (1..255)")
        if best is None:
            best = torch.full_like(probs, BACKGROUND_SCORE)
            labels = labels.to(probs.device)
        kept = torch.where(probs >= threshold, probs, torch.zeros_like(probs))
        wins = kept > best
        best = torch.where(wins, kept, best)
        labels[wins] = label
    return labels


def slot_probabilities(model: torch.nn.Module, data: dict, expressions: dict[str, dict[str, str]],
                       entries: list[tuple[int, str]], args: Namespace, device: torch.device
                       ) -> Iterator[tuple[int, Tensor]]:
    """(object id, mask probabilities [T, H, W]) of each object of one annotator slot."""
    for obj_id, exp_id in entries:
        caption = inference_caption(expressions[exp_id]["exp"], args)
        probs, _ = predict_expression(model, data["frames"], caption, data["size"], data["orig_size"], device,
                                      args.clip_len, args.query_selection == "chunk", amp=args.amp)
        yield obj_id, probs


def video_palette(args: Namespace, video: str, first_frame: str) -> list[int]:
    """The palette of the video's first annotation PNG (as upstream copies it), else the DAVIS palette."""
    path = Path(args.davis_path) / SPLIT / "Annotations" / video / f"{first_frame}.png"
    if path.is_file():
        with Image.open(path) as image:
            if image.mode == "P" and image.getpalette():
                return image.getpalette()
    return davis_palette()


def write_label_pngs(folder: Path, names: list[str], labels: np.ndarray, palette: list[int]) -> None:
    for name, frame in zip(names, labels):
        image = Image.fromarray(frame)
        image.putpalette(palette)
        image.save(folder / f"{name}.png")


def slot_folder(output_dir: Path, slot: int, video: str) -> Path:
    return output_dir / SPLIT / f"anno_{slot}" / video


def process_videos(worker: int, device: torch.device, videos: list[str], args: Namespace,
                   progress: ProgressFn) -> None:
    """Worker: the four annotator label maps of each video."""
    dataset = expression_set(args)
    model = build_inference_model(args, device)
    output_dir = Path(args.output_dir)
    for video in videos:
        data = dataset.load_video(video)
        names = data["frame_names"]
        palette = video_palette(args, video, names[0])
        expressions = dataset.videos[video]["expressions"]
        slots = annotator_slots(expressions)
        for slot in range(NUM_ANNOTATOR_SLOTS):
            probs = slot_probabilities(model, data, expressions, slots.get(slot, []), args, device)
            labels = merge_objects(probs, args.threshold, (len(names), *data["orig_size"])).cpu().numpy()
            write_folder_atomically(slot_folder(output_dir, slot, video),
                                    lambda tmp: write_label_pngs(tmp, names, labels, palette))
        progress(1)


def video_done(dataset: VideoExpressionSet, output_dir: Path, video: str) -> bool:
    frames = dataset.videos[video]["frames"]
    return all(folder_has_files(slot_folder(output_dir, slot, video), frames) for slot in range(NUM_ANNOTATOR_SLOTS))


def pending_videos(dataset: VideoExpressionSet, output_dir: Path, overwrite: bool) -> list[str]:
    """Videos missing any of their annotator folders (all of them with --overwrite)."""
    return [video for video in sorted(dataset.videos) if overwrite or not video_done(dataset, output_dir, video)]


def run(args: Namespace) -> str:
    """Predict the missing videos into DIR/valid/anno_0 .. anno_3; returns the line to print."""
    if args.clip_len is None:
        args.clip_len = getattr(get_method(args.method), "davis_clip_len", DAVIS_CLIP_LEN)
    if args.query_selection is None:
        args.query_selection = "chunk"
    output_dir = Path(args.output_dir)
    dataset = expression_set(args)
    todo = pending_videos(dataset, output_dir, args.overwrite)
    logger.info("%s: %d videos, %d expressions, %d videos to compute", args.davis_path, len(dataset.videos),
                len(dataset), len(todo))
    run_pending(process_videos, todo, args, desc="Ref-DAVIS17", unit="video")
    results = output_dir / SPLIT
    return (f"Results written to {results}/anno_0 .. anno_{NUM_ANNOTATOR_SLOTS - 1}; score them with eval_davis.py "
            f"--results_path {results}/anno_<k> and average with tools/average_davis_annotators.py {results}")


def main(argv: Optional[list[str]] = None) -> int:
    return cli_main(argv, "Ref-DAVIS17 inference: one palette-PNG result folder per annotator", run)


if __name__ == "__main__":
    sys.exit(main())
