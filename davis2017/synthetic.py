"""Synthetic DAVIS-like label sequences (moving blob objects) for tests and benchmarks."""
from __future__ import annotations

import cv2
import numpy as np

VOID_LABEL = 255


def blob_sequence(
    rng: np.random.Generator,
    n_frames: int,
    height: int,
    width: int,
    n_objects: int,
    with_void: bool = False,
) -> np.ndarray:
    """uint8 label maps [T, H, W]: each object is a union of drifting ellipses with id 1..n_objects.

    Later objects occlude earlier ones; with_void adds a drifting void (255) ellipse.
    """
    labels = np.zeros((n_frames, height, width), dtype=np.uint8)
    scale = min(height, width)
    n_shapes = n_objects + int(with_void)
    shapes = [_random_ellipses(rng, height, width, scale) for _ in range(n_shapes)]
    velocity = rng.uniform(-0.01, 0.01, size=(n_shapes, 2)) * scale
    for t in range(n_frames):
        for k, ellipses in enumerate(shapes):
            label = k + 1 if k < n_objects else VOID_LABEL
            for (cx, cy), axes, angle in ellipses:
                centre = (int(round(cx + velocity[k, 0] * t)), int(round(cy + velocity[k, 1] * t)))
                cv2.ellipse(labels[t], centre, axes, angle, 0, 360, label, thickness=-1)
    return labels


def _random_ellipses(
    rng: np.random.Generator, height: int, width: int, scale: int
) -> list[tuple[tuple[float, float], tuple[int, int], float]]:
    """Two or three overlapping ellipses forming one blob: (centre, half-axes, angle)."""
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    ellipses = []
    for _ in range(int(rng.integers(2, 4))):
        centre = (cx + rng.uniform(-0.1, 0.1) * scale, cy + rng.uniform(-0.1, 0.1) * scale)
        axes = (max(1, int(rng.uniform(0.04, 0.2) * scale)), max(1, int(rng.uniform(0.04, 0.2) * scale)))
        ellipses.append((centre, axes, float(rng.uniform(0, 180))))
    return ellipses


def noisy_prediction(rng: np.random.Generator, labels: np.ndarray, max_shift: int = 4) -> np.ndarray:
    """A plausible predicted label sequence: gt objects shifted, grown or shrunk, sometimes missed.

    Void pixels of the input become background.
    """
    n_objects = int(labels[labels != VOID_LABEL].max(initial=0))
    prediction = np.zeros_like(labels)
    kernel = np.ones((3, 3), dtype=np.uint8)
    for t in range(labels.shape[0]):
        dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        for k in range(1, n_objects + 1):
            if rng.random() < 0.1:
                continue  # missed in this frame
            mask = np.roll(labels[t] == k, (dy, dx), axis=(0, 1)).astype(np.uint8)
            iterations = int(rng.integers(0, 3))
            grow_or_shrink = cv2.dilate if rng.random() < 0.5 else cv2.erode
            mask = grow_or_shrink(mask, kernel, iterations=iterations)
            prediction[t][mask > 0] = k
    return prediction
