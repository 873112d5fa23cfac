"""Overlay drawing for predictions: coloured mask, contour and the expression as a caption."""
from __future__ import annotations

import cv2
import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image [H, W, 3] with ``mask`` [H, W] blended in ``color`` and outlined."""
    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = out[m] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    out = out.clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, thickness=max(1, min(image.shape[:2]) // 160))
    return out


def draw_caption(image: np.ndarray, text: str, color: tuple[int, int, int] = (255, 255, 255), line: int = 0
                 ) -> np.ndarray:
    """Write ``text`` on a dark band at the top of the image (line k for the k-th expression)."""
    out = image.copy()
    scale = max(0.3, min(image.shape[:2]) / 600)
    thickness = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y0 = line * (h + base + 4)
    cv2.rectangle(out, (0, y0), (min(w + 6, out.shape[1]), y0 + h + base + 4), (0, 0, 0), -1)
    cv2.putText(out, text, (3, y0 + h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
    return out
