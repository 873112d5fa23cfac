"""Clip-level transforms for referring video segmentation (spec 5.2).

A transform is called as ``transform(frames, target)`` with ``frames`` a list of PIL RGB images of
one clip and ``target`` a dict (possibly empty at evaluation). Geometric steps draw one random value
per clip so all frames stay aligned; the photometric distortion is drawn independently per frame, as
in ReferFormer. Target fields handled: ``boxes`` [T, 4] xyxy in pixels (x2/y2 = last pixel index,
as the dataset computes them), ``masks`` [T, H, W], ``valid`` [T], ``caption`` str, ``size`` [2]. With
several objects (datasets/ytvos.py ``expressions_per_clip``) the per-frame fields hold T rows per object and
``companion_captions`` the other objects' captions.
The final :class:`Normalize` turns the boxes into cxcywh normalised by the final (w, h).

Deviations from the reference code (spec 11.1 #3, #19), on purpose:
- the horizontal flip swaps 'left'/'right' on word boundaries only ("bright" stays "bright",
  "leftmost" still becomes "rightmost");
- the HSV jitter converts from RGB (the reference treats the RGB array as BGR) and clips to [0, 255]
  before the uint8 cast (the reference lets out-of-range values wrap around).
"""
from __future__ import annotations

import random
import re
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from util.box_ops import box_xyxy_to_cxcywh

Target = dict[str, Any]
Frames = list[Image.Image]
VideoTransform = Callable[[Frames, Target], tuple[Any, Target]]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LEFT_RIGHT = re.compile(r"\b(left|right)(?=(?:most|ward|wards)?\b)", re.IGNORECASE)
_SWAP_WORD = {"left": "right", "right": "left"}


def swap_left_right(caption: str) -> str:
    """Swap the words 'left' and 'right' (also in 'leftmost', 'leftwards', 'left-hand'), keeping case.

    Only whole words are touched, so 'bright', 'upright' or 'cleft' are left alone (spec 11.1 #3).
    """
    def replace(match: re.Match) -> str:
        word = match.group(1)
        swapped = _SWAP_WORD[word.lower()]
        if word.isupper():
            return swapped.upper()
        if word[0].isupper():
            return swapped.capitalize()
        return swapped
    return _LEFT_RIGHT.sub(replace, caption)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[VideoTransform]):
        self.transforms = list(transforms)

    def __call__(self, frames: Frames, target: Target) -> tuple[Any, Target]:
        for transform in self.transforms:
            frames, target = transform(frames, target)
        return frames, target

    def __repr__(self) -> str:
        inner = "\n".join(f"    {t!r}" for t in self.transforms)
        return f"{type(self).__name__}(\n{inner}\n)"


def hflip(frames: Frames, target: Target) -> tuple[Frames, Target]:
    """Mirror every frame, its boxes and masks, and swap left/right words in the caption."""
    width = frames[0].width
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"]
        target["boxes"] = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor(
            [width, 0.0, width, 0.0])
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    if "caption" in target:
        target["caption"] = swap_left_right(target["caption"])
    if "companion_captions" in target:
        target["companion_captions"] = [swap_left_right(c) for c in target["companion_captions"]]
    return [f.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for f in frames], target


class RandomHorizontalFlip:
    """Flip the whole clip with probability p."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, frames: Frames, target: Target) -> tuple[Frames, Target]:
        if random.random() < self.p:
            return hflip(frames, target)
        return frames, target


def resized_hw(width: int, height: int, short_side: int, max_size: Optional[int]) -> tuple[int, int]:
    """Output (h, w) for a shorter-side resize whose longer side is capped at max_size (if given).

    Same rule as the reference: if long/short * s > max_size, s = round(max_size * short / long);
    the shorter side becomes s and the longer int(s * long / short).
    """
    short, long = min(width, height), max(width, height)
    if max_size is not None and long / short * short_side > max_size:
        short_side = int(round(max_size * short / long))
    if short == short_side:
        return height, width
    if width < height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def resize(frames: Frames, target: Target, short_side: int, max_size: Optional[int]) -> tuple[Frames, Target]:
    """Resize the clip (bilinear frames, nearest masks, scaled boxes)."""
    width, height = frames[0].size
    new_h, new_w = resized_hw(width, height, short_side, max_size)
    if (new_h, new_w) == (height, width):
        target = dict(target)
        target["size"] = torch.tensor([height, width])
        return list(frames), target
    resized = [f.resize((new_w, new_h), Image.Resampling.BILINEAR) for f in frames]
    target = dict(target)
    if "boxes" in target:
        scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
        target["boxes"] = target["boxes"] * scale
    if "masks" in target and target["masks"].shape[0] > 0:
        masks = F.interpolate(target["masks"][:, None].float(), size=(new_h, new_w), mode="nearest")
        target["masks"] = masks[:, 0] > 0.5
    target["size"] = torch.tensor([new_h, new_w])
    return resized, target


class RandomResize:
    """Resize the clip's shorter side to a size drawn from `sizes` (longer side capped at max_size)."""

    def __init__(self, sizes: Sequence[int], max_size: Optional[int] = None):
        if not sizes:
            raise ValueError("RandomResize: `sizes` must not be empty")
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, frames: Frames, target: Target) -> tuple[Frames, Target]:
        return resize(frames, target, random.choice(self.sizes), self.max_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sizes={self.sizes}, max_size={self.max_size})"


def crop(frames: Frames, target: Target, top: int, left: int, height: int, width: int) -> tuple[Frames, Target]:
    """Cut the same window out of every frame; boxes are shifted and clamped to the window."""
    cropped = [f.crop((left, top, left + width, top + height)) for f in frames]
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
        boxes = torch.min(boxes.reshape(-1, 2, 2), torch.tensor([width, height], dtype=torch.float32))
        target["boxes"] = boxes.clamp(min=0).reshape(-1, 4)
    if "masks" in target:
        target["masks"] = target["masks"][:, top:top + height, left:left + width]
    target["size"] = torch.tensor([height, width])
    return cropped, target


class RandomSizeCrop:
    """Crop a window whose width and height are each uniform in [min_size, min(dim, max_size)]."""

    def __init__(self, min_size: int, max_size: int):
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomSizeCrop: need 0 < min_size <= max_size, got ({min_size}, {max_size})")
        self.min_size = min_size
        self.max_size = max_size

    def _extent(self, dim: int) -> int:
        upper = min(dim, self.max_size)
        return random.randint(min(self.min_size, upper), upper)

    def __call__(self, frames: Frames, target: Target) -> tuple[Frames, Target]:
        width, height = frames[0].size
        crop_w, crop_h = self._extent(width), self._extent(height)
        top = random.randint(0, height - crop_h)
        left = random.randint(0, width - crop_w)
        return crop(frames, target, top, left, crop_h, crop_w)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.min_size}, {self.max_size})"


class RandomSelect:
    """Apply `first` with probability p, otherwise `second`."""

    def __init__(self, first: VideoTransform, second: VideoTransform, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, frames: Frames, target: Target) -> tuple[Frames, Target]:
        if random.random() < self.p:
            return self.first(frames, target)
        return self.second(frames, target)


class Check:
    """valid[t] = 1 iff frame t's box still has positive width and height; zero the other boxes.

    Like the reference, a 1-pixel-wide object (x2 == x1 with last-index boxes) counts as invalid.
    """

    def __call__(self, frames: Frames, target: Target) -> tuple[Frames, Target]:
        if "boxes" not in target:
            return frames, target
        target = dict(target)
        corners = target["boxes"].reshape(-1, 2, 2)
        keep = torch.all(corners[:, 1, :] > corners[:, 0, :], dim=1)
        target["boxes"] = target["boxes"] * keep[:, None].to(target["boxes"].dtype)
        target["valid"] = keep.long()
        return frames, target


class PhotometricDistort:
    """SSD-style colour jitter drawn independently for each frame (reference behaviour).

    Brightness +-32 (p 0.5); then either contrast -> HSV (saturation, hue) or HSV -> contrast, each
    factor applied with p 0.5 (contrast and saturation x U(0.5, 1.5), hue +-18 degrees); finally a
    random channel permutation with p 0.5. Colour words in captions are NOT adjusted, so datasets
    whose expressions name colours (the synthetic one) should disable it.
    """

    _PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))

    def __call__(self, frames: Frames, target: Target) -> tuple[Frames, Target]:
        return [self.distort(f) for f in frames], target

    @staticmethod
    def _contrast(image: np.ndarray) -> np.ndarray:
        if random.random() < 0.5:
            image = image * random.uniform(0.5, 1.5)
        return image

    @staticmethod
    def _hsv_jitter(image: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2HSV)
        if random.random() < 0.5:
            hsv[:, :, 1] *= random.uniform(0.5, 1.5)
        if random.random() < 0.5:
            hsv[:, :, 0] = np.mod(hsv[:, :, 0] + random.uniform(-18.0, 18.0), 360.0)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def distort(self, frame: Image.Image) -> Image.Image:
        """One independent draw of the distortion for a single frame."""
        image = np.asarray(frame, dtype=np.float32)
        if random.random() < 0.5:
            image = image + random.uniform(-32.0, 32.0)
        if random.random() < 0.5:
            image = self._hsv_jitter(self._contrast(image))
        else:
            image = self._contrast(self._hsv_jitter(image))
        if random.random() < 0.5:
            image = image[:, :, list(random.choice(self._PERMUTATIONS))]
        return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


class ToTensor:
    """PIL frames -> float Tensor[T, 3, h, w] in [0, 1]; masks -> float 0/1."""

    def __call__(self, frames: Frames, target: Target) -> tuple[Tensor, Target]:
        arrays = np.stack([np.asarray(f.convert("RGB"), dtype=np.uint8) for f in frames])
        clip = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)
        if "masks" in target:
            target = dict(target)
            target["masks"] = target["masks"].float()
        return clip, target


class Normalize:
    """Normalise the clip per channel and convert boxes to cxcywh divided by the final (w, h)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        clip = (clip - self.mean) / self.std
        target = dict(target)
        height, width = clip.shape[-2:]
        target["size"] = torch.tensor([height, width])
        if "boxes" in target:
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            target["boxes"] = box_xyxy_to_cxcywh(target["boxes"]) / scale
        return clip, target


def make_video_transforms(image_set: str, *, train_short_sides: Sequence[int], max_size: Optional[int],
                          crop_short_sides: Sequence[int], crop_range: tuple[int, int], eval_short_side: int,
                          photometric: bool = True, eval_max_size: Optional[int] = None,
                          crop_final: Optional[tuple[Sequence[int], Optional[int]]] = None) -> VideoTransform:
    """Build the Ref-YTVOS train transform (spec 5.2) or the evaluation transform.

    Real-data values: train_short_sides [288, 320, 352, 392, 416, 448, 480, 512], max_size 640,
    crop_short_sides [400, 500, 600], crop_range (384, 600), eval_short_side 360 (no cap at
    evaluation unless eval_max_size is given). `image_set` is 'train' or 'val'/'valid'/'test'.
    ``crop_final`` (short sides, max size) resizes the cropped branch differently from the plain one
    (RefCOCO's image transform); by default both end with train_short_sides / max_size.
    """
    finish = [ToTensor(), Normalize()]
    if image_set == "train":
        final_sides, final_max = crop_final if crop_final is not None else (train_short_sides, max_size)
        plain = Compose([RandomResize(train_short_sides, max_size), Check()])
        cropped = Compose([RandomResize(crop_short_sides), RandomSizeCrop(*crop_range),
                           RandomResize(final_sides, final_max), Check()])
        steps: list[VideoTransform] = [RandomHorizontalFlip()]
        if photometric:
            steps.append(PhotometricDistort())
        return Compose(steps + [RandomSelect(plain, cropped)] + finish)
    if image_set in ("val", "valid", "test"):
        return Compose([RandomResize([eval_short_side], eval_max_size)] + finish)
    raise ValueError(f"make_video_transforms: unknown image_set {image_set!r}; expected 'train', 'val', "
                     "'valid' or 'test'")
