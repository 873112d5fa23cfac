"""Segment what sentences refer to in your own video: a folder of frames or a video file.

    python demo.py --resume CKPT --demo_path FOLDER_OR_VIDEO --demo_exp "a big truck on the road" \\
        [--demo_exp "the person on the left" ...] --output_dir DIR \\
        [--clip_len 36] [--video_fps 10] [--device cpu] [model flags, --method NAME]

Writes into DIR:
    masks/<k>/<frame>.png   binary mask (0/255) of expression k (0-based, in the order given)
    overlays/<frame>.jpg    the frame with each expression's mask in its own colour, outlined, and the
                            expressions as captions
    overlay.mp4             the overlays as a video (a .gif if this machine has no mp4 encoder)
    expressions.json        expression k -> text, colour, query slot used
A folder is read in name order (jpg/jpeg/png/bmp; numbers in names sort numerically); frames of a video
are named 00000, 00001, ... Long videos are processed in chunks of --clip_len frames (default 36; 0
for one clip), and each expression's query slot is chosen once from scores averaged over all frames
(``--query_selection chunk``: per chunk). The model flags must match the checkpoint's.
"""
from __future__ import annotations

import logging
import re
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from datasets.video_io import VIDEO_EXTENSIONS, VideoReadError, iter_frames, video_metadata
from datasets.ytvos import transforms_from_args
from models.postprocessors import mask_logits_to_original
from util.inference import (build_inference_model, chunk_slices, cli_main, forward_clips, frame_queries,
                            inference_caption, pick_query_masks)
from util.logging import write_json_atomic
from util.video import VideoWriter
from util.visualize import PALETTE, draw_caption, overlay_mask

logger = logging.getLogger("demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_CLIP_LEN = 36
DEFAULT_FPS = 10.0

Chunk = tuple[slice, list[Image.Image]]


class DemoInputError(ValueError):
    """Unusable demo input; the message names the file or flag."""


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name.lower())]


class FolderFrames:
    """Frames of a folder, checked up front: at least one image, all readable headers, one size."""

    def __init__(self, folder: Path):
        self.files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
        if not self.files:
            raise DemoInputError(f"{folder}: no frames found (expected {', '.join(IMAGE_EXTENSIONS)} files)")
        sizes = [self._size(path) for path in self.files]
        for path, size in zip(self.files, sizes):
            if size != sizes[0]:
                raise DemoInputError(f"{path}: frame size {size[0]}x{size[1]} differs from {self.files[0].name} "
                                     f"({sizes[0][0]}x{sizes[0][1]}); all frames must have the same size")
        self.names = [path.stem for path in self.files]
        self.fps: Optional[float] = None

    @staticmethod
    def _size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as image:
                return image.size
        except (UnidentifiedImageError, OSError) as err:
            raise DemoInputError(f"{path}: cannot read this image ({err})") from err

    @staticmethod
    def _load(path: Path) -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise DemoInputError(f"{path}: cannot decode this image ({err})") from err

    def chunks(self, clip_len: int) -> Iterator[Chunk]:
        for span in chunk_slices(len(self.files), clip_len):
            yield span, [self._load(path) for path in self.files[span]]


class VideoFrames:
    """Frames of a video file, decoded sequentially (once per pass) and named 00000, 00001, ..."""

    def __init__(self, path: Path):
        self.path = path
        try:
            count, self.fps = video_metadata(path)
        except VideoReadError as err:
            raise DemoInputError(str(err)) from err
        if count <= 0:
            raise DemoInputError(f"{path}: the video has no frames")
        self.names: list[str] = []

    def chunks(self, clip_len: int) -> Iterator[Chunk]:
        buffer: list[Image.Image] = []
        start = count = 0
        for count, frame in enumerate(iter_frames(self.path), start=1):
            buffer.append(Image.fromarray(frame))
            if clip_len > 0 and len(buffer) == clip_len:
                yield slice(start, count), buffer
                start, buffer = count, []
        if buffer:
            yield slice(start, count), buffer
        if not count:
            raise DemoInputError(f"{self.path}: no frame could be decoded")
        self.names = [f"{i:05d}" for i in range(count)]


def open_frames(path: Path) -> Any:
    """FolderFrames or VideoFrames for --demo_path."""
    if path.is_dir():
        return FolderFrames(path)
    if not path.exists():
        raise DemoInputError(f"--demo_path {path}: no such file or folder")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise DemoInputError(f"--demo_path {path} is a single image; pass the folder that holds the frames")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        logger.warning("%s: unusual video extension, trying to decode it anyway", path)
    return VideoFrames(path)


def check_expressions(expressions: Optional[list[str]]) -> list[str]:
    if not expressions:
        raise DemoInputError('no expression given: pass --demo_exp "the object to segment" (repeat it for more)')
    for k, text in enumerate(expressions, start=1):
        if not text.strip():
            raise DemoInputError(f"--demo_exp number {k} is empty; each expression must describe an object")
    return [" ".join(text.split()) for text in expressions]


@torch.no_grad()
def predict_all(model: nn.Module, source: Any, captions: list[str], transform: Any, clip_len: int,
                device: torch.device, amp: str = "none"
                ) -> tuple[list[Tensor], list[Tensor], list[slice], tuple[int, int], tuple[int, int]]:
    """First pass: class and stride-4 mask logits of every expression over all chunks (kept on the CPU)."""
    logits: list[list[Tensor]] = [[] for _ in captions]
    masks: list[list[Tensor]] = [[] for _ in captions]
    spans = []
    size = orig_size = (0, 0)
    for span, frames in source.chunks(clip_len):
        clip, target = transform(frames, {})
        size, orig_size = tuple(int(v) for v in target["size"]), (frames[0].height, frames[0].width)
        for k, caption in enumerate(captions):
            (chunk_logits,), (chunk_masks,) = forward_clips(model, [clip], caption, size, device, amp)
            logits[k].append(chunk_logits.cpu())
            masks[k].append(chunk_masks.cpu())
        spans.append(span)
    return [torch.cat(x) for x in logits], [torch.cat(x) for x in masks], spans, size, orig_size


def write_outputs(source: Any, expressions: list[str], chosen: list[Tensor], size: tuple[int, int],
                  orig_size: tuple[int, int], clip_len: int, threshold: float, output_dir: Path, fps: float) -> Path:
    """Second pass: masks, overlays and the overlay video, chunk by chunk."""
    mask_dirs = [output_dir / "masks" / str(k) for k in range(len(expressions))]
    for folder in mask_dirs + [output_dir / "overlays"]:
        folder.mkdir(parents=True, exist_ok=True)
    with VideoWriter(output_dir / "overlay.mp4", fps) as video:
        for span, frames in source.chunks(clip_len):
            binary = [(mask_logits_to_original(c[span], size, orig_size) > threshold).numpy() for c in chosen]
            for t, frame in enumerate(frames):
                name = source.names[span.start + t]
                image = np.asarray(frame)
                for k, masks in enumerate(binary):
                    Image.fromarray(masks[t].astype(np.uint8) * 255).save(mask_dirs[k] / f"{name}.png")
                    image = overlay_mask(image, masks[t], PALETTE[k % len(PALETTE)])
                for k, text in enumerate(expressions):
                    image = draw_caption(image, text, PALETTE[k % len(PALETTE)], line=k)
                Image.fromarray(image).save(output_dir / "overlays" / f"{name}.jpg", quality=92)
                video.write(image)
    return video.path


def run(args: Namespace) -> dict[str, Any]:
    """Check the inputs, load the model, predict and write everything; returns a summary."""
    if not args.demo_path:
        raise DemoInputError("pass --demo_path FOLDER_OR_VIDEO")
    expressions = check_expressions(args.demo_exp)
    source = open_frames(Path(args.demo_path))
    device = torch.device(args.device)
    model = build_inference_model(args, device)
    clip_len = DEFAULT_CLIP_LEN if args.clip_len is None else args.clip_len
    captions = [inference_caption(text, args) for text in expressions]
    transform = transforms_from_args("val", args)
    logits, masks, spans, size, orig_size = predict_all(model, source, captions, transform, clip_len, device,
                                                        args.amp)
    per_chunk = args.query_selection == "chunk"
    queries = [frame_queries(x, spans, per_chunk) for x in logits]
    chosen = [pick_query_masks(m, q) for m, q in zip(masks, queries)]
    output_dir = Path(args.output_dir)
    fps = args.video_fps or source.fps or DEFAULT_FPS
    video = write_outputs(source, expressions, chosen, size, orig_size, clip_len, args.threshold, output_dir, fps)
    summary = {"input": str(args.demo_path), "frames": int(logits[0].shape[0]), "video": str(video),
               "expressions": [{"index": k, "text": text, "color": list(PALETTE[k % len(PALETTE)]),
                                "queries": sorted(set(q.tolist()))} for k, (text, q) in enumerate(zip(expressions, queries))]}
    write_json_atomic(output_dir / "expressions.json", summary)
    return summary


def run_and_describe(args: Namespace) -> str:
    summary = run(args)
    return (f"{summary['frames']} frames, {len(summary['expressions'])} expression(s): masks in "
            f"{args.output_dir}/masks, overlays in {args.output_dir}/overlays, video {summary['video']}")


def main(argv: Optional[list[str]] = None) -> int:
    return cli_main(argv, "Referring video segmentation demo on a folder of frames or a video file", run_and_describe)


if __name__ == "__main__":
    sys.exit(main())
