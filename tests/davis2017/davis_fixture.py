"""A tiny on-disk DAVIS-2017 tree (JPEGImages, Annotations[_unsupervised], ImageSets) and results."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def davis_palette() -> list[int]:
    """The 256-colour PASCAL/DAVIS palette (id 1 dark red, 2 dark green, ...), flattened RGB."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.extend(rgb)
    return palette


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    """Indexed PNG of a [H, W] id map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(davis_palette())
    image.save(path)


def write_davis_tree(root: Path, sequences: dict[str, np.ndarray], subset: str = "val") -> Path:
    """DAVIS folders for label sequences [T, H, W] (255 = void), frames named 00000, 00001, ..."""
    for name, labels in sequences.items():
        for t, frame in enumerate(labels):
            image = Image.fromarray(np.full((*frame.shape, 3), 40 * (t % 6), dtype=np.uint8))
            jpg = root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"
            jpg.parent.mkdir(parents=True, exist_ok=True)
            image.save(jpg)
            for folder in ("Annotations", "Annotations_unsupervised"):
                write_palette_png(root / folder / "480p" / name / f"{t:05d}.png", frame)
    image_set = root / "ImageSets" / "2017" / f"{subset}.txt"
    image_set.parent.mkdir(parents=True, exist_ok=True)
    image_set.write_text("".join(f"{name}\n" for name in sequences))
    return root


def write_results(root: Path, sequences: dict[str, np.ndarray]) -> Path:
    """Results folder: <root>/<sequence>/<frame>.png indexed PNGs."""
    for name, labels in sequences.items():
        for t, frame in enumerate(labels):
            write_palette_png(root / name / f"{t:05d}.png", frame)
    return root
