"""Writing videos of RGB frames: .mp4 (H.264 through PyAV, else MPEG-4 through OpenCV) or animated .gif.

Frames are streamed to a temporary file next to the target, which replaces the target only when the
writer is closed without error, so a crash never leaves a truncated video under the final name.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

VIDEO_FORMATS = (".mp4", ".gif")


def _even_frame(frame: np.ndarray) -> np.ndarray:
    """Pad the last row/column so both sides are even (yuv420p encoders need it)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


class _PyAVBackend:
    """H.264 (libx264) when this PyAV build has it, else MPEG-4 part 2."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import av

        self.container = av.open(str(path), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        import av

        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


class _OpenCVBackend:
    """MPEG-4 part 2 ('mp4v') through OpenCV's bundled FFmpeg."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import cv2

        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
        if not self.writer.isOpened():
            raise OSError(f"OpenCV cannot write mp4 to {path}")

    def write(self, frame: np.ndarray) -> None:
        import cv2

        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.writer.release()


class _GifBackend:
    """Animated GIF through Pillow (frames are kept in memory until close)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        self.path = path
        self.duration_ms = max(1, int(round(1000.0 / fps)))
        self.frames: list[Image.Image] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.MEDIANCUT))

    def close(self) -> None:
        if self.frames:
            self.frames[0].save(self.path, format="GIF", save_all=True, append_images=self.frames[1:],
                                duration=self.duration_ms, loop=0)


def _mp4_backend(path: Path, fps: float, size: tuple[int, int]) -> Any:
    try:
        return _PyAVBackend(path, fps, size)
    except ImportError:
        return _OpenCVBackend(path, fps, size)


class VideoWriter:
    """``with VideoWriter("out.mp4", fps=10) as w: w.write(rgb)``; ``w.path`` is the file written.

    The format follows the suffix (.mp4 or .gif). If no mp4 encoder is available the video is written
    as a .gif next to the requested path instead, with a warning.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 10.0):
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_FORMATS:
            raise ValueError(f"{self.path}: unsupported video format; use one of {', '.join(VIDEO_FORMATS)}")
        if not fps > 0:
            raise ValueError(f"{self.path}: fps must be positive, got {fps}")
        self.fps = float(fps)
        self.frame_size: Optional[tuple[int, int]] = None
        self.count = 0
        self._backend: Any = None
        self._tmp: Optional[Path] = None

    def _open(self, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() == ".mp4":
            self._tmp = self.path.with_name(f".{self.path.stem}.tmp.mp4")
            try:
                self._backend = _mp4_backend(self._tmp, self.fps, size)
                return
            except OSError as err:
                logger.warning("%s; writing a GIF instead", err)
                self.path = self.path.with_suffix(".gif")
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp.gif")
        self._backend = _GifBackend(self._tmp, self.fps, size)

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame [H, W, 3]; all frames must have the size of the first."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: frames must be RGB uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        frame = _even_frame(frame)
        if self.frame_size is None:
            self.frame_size = (frame.shape[0], frame.shape[1])
            self._open(self.frame_size)
        elif frame.shape[:2] != self.frame_size:
            raise ValueError(f"{self.path}: frame {self.count} has size {frame.shape[:2]}, "
                             f"the first frame {self.frame_size}")
        self._backend.write(np.ascontiguousarray(frame))
        self.count += 1

    def close(self) -> Path:
        """Finish the file and move it into place; returns the path written."""
        if self._backend is None:
            raise ValueError(f"{self.path}: no frames were written")
        self._backend.close()
        os.replace(self._tmp, self.path)
        self._backend = None
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._backend = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if exc_type is None and self._backend is not None:
            self.close()
        else:
            self.abort()
