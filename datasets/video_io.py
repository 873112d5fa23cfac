"""Decoding frames of video files (A2D-Sentences clips, demo inputs) with PyAV, or OpenCV as a fallback.

torchvision >= 0.22 no longer decodes video (spec 11.3), so this module owns it. Frame index i is the
i-th decoded frame, as upstream's ``read_video`` list; decoding stops after the last requested frame,
so a clip around an early annotated frame never decodes the whole file.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class VideoReadError(RuntimeError):
    """A video file could not be opened or does not hold the requested frames."""


def _have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    return path


def _iter_pyav(path: Path) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoReadError(f"{path}: cannot open video ({err})") from err
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise VideoReadError(f"{path}: decoding failed ({err})") from err


def _iter_opencv(path: Path) -> Iterator[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(f"{path}: cannot open video with OpenCV")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames [H, W, 3] in decoding order."""
    path = _check_file(Path(path))
    return _iter_pyav(path) if _have_pyav() else _iter_opencv(path)


def read_frames(path: str | Path, indices: Sequence[int]) -> list[Image.Image]:
    """The frames at `indices` (any order, repeats allowed) as RGB PIL images, in the order asked."""
    if not indices:
        return []
    if min(indices) < 0:
        raise ValueError(f"{path}: negative frame index in {list(indices)}")
    wanted = set(indices)
    last = max(wanted)
    found: dict[int, Image.Image] = {}
    decoded = 0
    for index, frame in enumerate(iter_frames(path)):
        decoded = index + 1
        if index in wanted:
            found[index] = Image.fromarray(frame)
        if index >= last:
            break
    missing = sorted(wanted - set(found))
    if missing:
        raise VideoReadError(f"{path}: decoded {decoded} frames, frame(s) {missing[:5]} requested")
    return [found[i] for i in indices]


def count_decoded_frames(path: str | Path) -> int:
    """Number of frames by decoding the whole video (exact when the container metadata is not)."""
    return sum(1 for _ in iter_frames(path))


def _metadata_pyav(path: Path) -> tuple[int, Optional[float]]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            count = stream.frames
            if count <= 0:
                count = sum(1 for packet in container.demux(stream) if packet.size > 0)
            return int(count), rate
    except av.error.FFmpegError as err:
        raise VideoReadError(f"{path}: cannot read video metadata ({err})") from err


def _metadata_opencv(path: Path) -> tuple[int, Optional[float]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(f"{path}: cannot open video with OpenCV")
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        rate = capture.get(cv2.CAP_PROP_FPS) or None
    finally:
        capture.release()
    return count, rate


def video_metadata(path: str | Path) -> tuple[int, Optional[float]]:
    """(number of frames, frames per second or None) from the container, without decoding pixels."""
    path = _check_file(Path(path))
    return _metadata_pyav(path) if _have_pyav() else _metadata_opencv(path)


def count_frames(path: str | Path) -> int:
    """Number of frames of a video (container metadata; demuxed packets when the header has none)."""
    return video_metadata(path)[0]
