"""Clip transforms of datasets/transforms_video.py."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.transforms_video import (IMAGENET_MEAN, IMAGENET_STD, Check, PhotometricDistort, RandomSizeCrop,
                                       hflip, make_video_transforms, resize, resized_hw, swap_left_right)

REAL = dict(train_short_sides=[288, 320, 352, 392, 416, 448, 480, 512], max_size=640,
            crop_short_sides=[400, 500, 600], crop_range=(384, 600), eval_short_side=360)


def clip_with_box(height: int = 40, width: int = 60, frames: int = 2):
    """Frames with a bright rectangle at cols 10-19, rows 5-14 and the matching target."""
    array = np.zeros((height, width, 3), np.uint8)
    array[5:15, 10:20] = 255
    masks = torch.zeros(frames, height, width)
    masks[:, 5:15, 10:20] = 1
    target = {"boxes": torch.tensor([[10.0, 5.0, 19.0, 14.0]] * frames), "masks": masks,
              "valid": torch.ones(frames, dtype=torch.long), "caption": "the left dog",
              "size": torch.tensor([height, width])}
    return [Image.fromarray(array) for _ in range(frames)], target


@pytest.mark.parametrize("caption, expected", [
    ("the dog on the left", "the dog on the right"),
    ("right hand of the leftmost man", "left hand of the rightmost man"),
    ("a bright light", "a bright light"),
    ("an upright bottle", "an upright bottle"),
    ("the cleft rock", "the cleft rock"),
    ("left-hand side, moving leftwards", "right-hand side, moving rightwards"),
    ("Left and RIGHT", "Right and LEFT"),
    ("copyright leftover", "copyright leftover"),
])
def test_swap_left_right_on_word_boundaries(caption: str, expected: str) -> None:
    assert swap_left_right(caption) == expected


def test_hflip_mirrors_frames_masks_boxes_and_caption() -> None:
    frames, target = clip_with_box()
    flipped, out = hflip(frames, target)
    assert out["caption"] == "the right dog"
    array = np.asarray(flipped[0])
    assert array[5:15, 40:50].min() == 255 and array[:, :40].max() == 0
    assert out["masks"][:, 5:15, 40:50].all() and out["masks"].sum() == 2 * 100
    assert out["boxes"][0].tolist() == [60 - 19, 5, 60 - 10, 14]
    assert target["caption"] == "the left dog", "the input target must not be modified"


@pytest.mark.parametrize("width, height, short, max_size, expected", [
    (640, 360, 360, None, (360, 640)),
    (1280, 720, 512, 640, (360, 640)),
    (360, 640, 288, None, (512, 288)),
    (96, 96, 64, 128, (64, 64)),
    (1280, 720, 300, 640, (300, 533)),
])
def test_resized_hw_follows_reference_rule(width, height, short, max_size, expected) -> None:
    assert resized_hw(width, height, short, max_size) == expected


def test_resize_scales_boxes_and_keeps_binary_masks() -> None:
    frames, target = clip_with_box()
    resized, out = resize(frames, target, 20, None)
    assert resized[0].size == (30, 20) and out["size"].tolist() == [20, 30]
    assert out["boxes"][0].tolist() == [5.0, 2.5, 9.5, 7.0]
    assert out["masks"].dtype == torch.bool and out["masks"].shape == (2, 20, 30)
    assert out["masks"][:, 3:7, 5:10].all()


def test_random_size_crop_uses_one_window_and_clamps_boxes() -> None:
    random.seed(0)
    array = np.arange(40 * 60, dtype=np.uint32).reshape(40, 60)
    frames = [Image.fromarray((array % 251).astype(np.uint8)).convert("RGB") for _ in range(3)]
    target = {"boxes": torch.tensor([[0.0, 0.0, 59.0, 39.0]] * 3), "masks": torch.ones(3, 40, 60)}
    for _ in range(10):
        cropped, out = RandomSizeCrop(20, 30)(frames, target)
        w, h = cropped[0].size
        assert 20 <= w <= 30 and 20 <= h <= 30 and out["size"].tolist() == [h, w]
        assert all(np.array_equal(np.asarray(c), np.asarray(cropped[0])) for c in cropped)
        assert out["masks"].shape == (3, h, w)
        assert (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 3] <= h).all() and (out["boxes"] >= 0).all()


def test_check_marks_degenerate_boxes_invalid_and_zeroes_them() -> None:
    target = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0], [3.0, 3.0, 3.0, 8.0], [4.0, 4.0, 9.0, 4.0]])}
    _, out = Check()([], target)
    assert out["valid"].tolist() == [1, 0, 0] and out["valid"].dtype == torch.long
    assert out["boxes"][1:].abs().sum() == 0 and out["boxes"][0].tolist() == [1.0, 2.0, 5.0, 6.0]


def test_photometric_distort_is_independent_per_frame_and_keeps_range() -> None:
    random.seed(0)
    frame = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    outputs, _ = PhotometricDistort()([frame] * 6, {})
    arrays = [np.asarray(o) for o in outputs]
    assert all(a.shape == (16, 16, 3) and a.dtype == np.uint8 for a in arrays)
    assert len({a.tobytes() for a in arrays}) > 1, "each frame gets its own draw"


def test_train_transform_real_defaults_output() -> None:
    random.seed(0)
    transform = make_video_transforms("train", **REAL)
    frames, target = clip_with_box(height=360, width=640, frames=3)
    for _ in range(4):
        clip, out = transform(frames, dict(target))
        h, w = out["size"].tolist()
        assert clip.shape == (3, 3, h, w) and out["masks"].shape == (3, h, w)
        assert max(h, w) <= 640 and min(h, w) <= 512
        assert out["masks"].dtype == torch.float32
        assert ((out["boxes"] >= 0) & (out["boxes"] <= 1)).all()


def test_eval_transform_normalises_and_resizes_shorter_side_without_cap() -> None:
    transform = make_video_transforms("valid", **REAL)
    frames = [Image.new("RGB", (1000, 200), (255, 0, 128))]
    clip, out = transform(frames, {})
    assert clip.shape == (1, 3, 360, 1800) and out["size"].tolist() == [360, 1800]
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(clip[0, :, 0, 0], expected, atol=1e-2)


def test_unknown_image_set_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown image_set 'bogus'"):
        make_video_transforms("bogus", **REAL)
