"""Pseudo-clips from still images for joint training (RefCOCO sentences as videos, spec 5.2 "refexp2seq").

Each extra frame is the image after a random photometric change (brightness and/or hue-saturation shift), a
random perspective zoom and rotation/translation, and sometimes a motion blur; the mask follows the same
geometry. The release drew these with imgaug, which no longer runs on NumPy >= 1.24; this is an OpenCV
re-implementation with the release's ranges (perspective 0.08, translation 10 %, rotation 20 degrees, brightness
40, hue/saturation 5, blur kernels 9 or 11 with probability 0.25). Perspective and affine parts are composed into
one homography, so each frame is resampled once. Randomness comes from Python's ``random`` module, which the
training sampler seeds per sample.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ClipAugmentation:
    perspective: float = 0.08      # std of the inward corner jitter, as a fraction of the image size
    translate: float = 0.1         # max shift, fraction of width / height
    rotate: float = 20.0           # max rotation, degrees
    brightness: float = 40.0       # max added intensity
    hue_saturation: float = 5.0    # max shift of hue and saturation
    blur_prob: float = 0.25
    blur_kernels: tuple[int, ...] = (9, 11)


def perspective_zoom(height: int, width: int, jitter: np.ndarray) -> np.ndarray:
    """Homography stretching the quadrilateral of the corners moved inward by ``jitter`` ([4, 2], fractions of
    (w, h), order top-left, top-right, bottom-right, bottom-left) onto the whole frame."""
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    source = corners + inward * np.abs(jitter).astype(np.float32) * np.array([width, height], np.float32)
    return cv2.getPerspectiveTransform(source, corners).astype(np.float64)


def rotation_translation(height: int, width: int, degrees: float, shift_x: float, shift_y: float) -> np.ndarray:
    """3x3 matrix rotating by ``degrees`` about the frame centre, then shifting by (shift_x, shift_y) pixels."""
    matrix = np.eye(3)
    matrix[:2] = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    matrix[0, 2] += shift_x
    matrix[1, 2] += shift_y
    return matrix


def motion_blur(image: np.ndarray, size: int, degrees: float) -> np.ndarray:
    """Average along a line of ``size`` pixels through each pixel, at angle ``degrees``."""
    kernel = np.zeros((size, size), np.float32)
    centre = (size - 1) / 2
    dx, dy = math.cos(math.radians(degrees)) * centre, math.sin(math.radians(degrees)) * centre
    cv2.line(kernel, (round(centre - dx), round(centre - dy)), (round(centre + dx), round(centre + dy)), 1.0, 1)
    return cv2.filter2D(image, -1, kernel / kernel.sum())


def shift_colours(image: np.ndarray, brightness: float, hue_saturation: float) -> np.ndarray:
    """Add ``brightness`` to every channel, then ``hue_saturation`` to hue (wrapping) and saturation (clipped)."""
    out = np.clip(image.astype(np.int16) + int(round(brightness)), 0, 255).astype(np.uint8)
    if hue_saturation:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.int16)
        shift = int(round(hue_saturation))
        hsv[..., 0] = (hsv[..., 0] + shift) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + shift, 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return out


def augmented_copy(image: np.ndarray, mask: np.ndarray, config: ClipAugmentation) -> tuple[np.ndarray, np.ndarray]:
    """One pseudo-frame: image [H, W, 3] uint8 and bool mask [H, W] under the same random geometry."""
    height, width = mask.shape
    ops = random.sample(["brightness", "hue_saturation"], random.randint(1, 2))
    image = shift_colours(image,
                          random.uniform(-config.brightness, config.brightness) if "brightness" in ops else 0.0,
                          random.uniform(-config.hue_saturation, config.hue_saturation) if "hue_saturation" in ops
                          else 0.0)
    jitter = np.array([[random.gauss(0, config.perspective) for _ in range(2)] for _ in range(4)])
    homography = rotation_translation(height, width, random.uniform(-config.rotate, config.rotate),
                                      random.uniform(-config.translate, config.translate) * width,
                                      random.uniform(-config.translate, config.translate) * height)
    homography = homography @ perspective_zoom(height, width, jitter)
    image = cv2.warpPerspective(image, homography, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.warpPerspective(mask.astype(np.uint8), homography, (width, height), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    if random.random() < config.blur_prob:
        image = motion_blur(image, random.choice(config.blur_kernels), random.uniform(0, 360))
    return image, mask


def image_to_clip(image: np.ndarray, mask: np.ndarray, num_frames: int,
                  config: ClipAugmentation = ClipAugmentation()) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The image and ``num_frames - 1`` augmented copies in random order, with their masks."""
    frames = [(image, mask)] + [augmented_copy(image, mask, config) for _ in range(num_frames - 1)]
    random.shuffle(frames)
    return [f for f, _ in frames], [m for _, m in frames]
