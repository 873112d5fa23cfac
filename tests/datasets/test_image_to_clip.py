"""Pseudo-clips from images (joint training): geometry by hand, masks that follow the image, and the clip dataset."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import build_dataset
from datasets.image_to_clip import (ClipAugmentation, augmented_copy, image_to_clip, motion_blur, perspective_zoom,
                                    rotation_translation, shift_colours)
from datasets.refexp import RefExpClipDataset, refexp_transforms
from opts import parse_args
from test_refexp import SENTENCES, write_refcoco

STILL = ClipAugmentation(perspective=0.0, translate=0.0, rotate=0.0, brightness=0.0, hue_saturation=0.0,
                         blur_prob=0.0)


def _object_image() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((40, 60, 3), 50, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 15:35] = True
    image[mask] = (250, 20, 20)
    return image, mask


def test_geometry_by_hand() -> None:
    # no jitter: the identity; corners moved in by 10 % of (w, h): the centre 80 % fills the frame
    np.testing.assert_allclose(perspective_zoom(40, 60, np.zeros((4, 2))), np.eye(3), atol=1e-9)
    zoom = perspective_zoom(40, 60, np.full((4, 2), 0.1))
    point = zoom @ np.array([6.0, 4.0, 1.0])
    np.testing.assert_allclose(point[:2] / point[2], [0.0, 0.0], atol=1e-6)
    # a 90-degree turn about the centre (30, 20) followed by a shift of (5, -2)
    turn = rotation_translation(40, 60, 90.0, 5.0, -2.0)
    np.testing.assert_allclose(turn @ np.array([40.0, 20.0, 1.0]), [35.0, 8.0, 1.0], atol=1e-9)


def test_still_configuration_keeps_the_image() -> None:
    image, mask = _object_image()
    random.seed(0)
    out, out_mask = augmented_copy(image, mask, STILL)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(out_mask, mask)


def test_mask_follows_the_object() -> None:
    """Under random release-range geometry the warped mask still covers the warped red pixels."""
    image, mask = _object_image()
    no_colour = ClipAugmentation(brightness=0.0, hue_saturation=0.0, blur_prob=0.0)
    for seed in range(10):
        random.seed(seed)
        out, out_mask = augmented_copy(image, mask, no_colour)
        red = (out[..., 0] > 150) & (out[..., 1] < 100)
        assert out_mask.sum() > 0
        assert (red & out_mask).sum() / (red | out_mask).sum() > 0.8, seed


def test_colour_shift_and_blur() -> None:
    image, _ = _object_image()
    assert int(shift_colours(image, 10, 0)[0, 0, 0]) == 60
    assert np.array_equal(shift_colours(image, 0, 0), image)
    blurred = motion_blur(image, 9, 0.0)  # horizontal: the left edge of the object spreads along rows only
    assert blurred[15, 11, 0] > 50 and blurred[7, 20, 0] == 50


def test_clip_holds_the_original_and_shuffles() -> None:
    image, mask = _object_image()
    random.seed(3)
    frames, masks = image_to_clip(image, mask, 4)
    assert len(frames) == len(masks) == 4
    originals = [i for i, f in enumerate(frames) if np.array_equal(f, image)]
    assert len(originals) == 1 and np.array_equal(masks[originals[0]], mask)
    positions = set()
    for seed in range(8):
        random.seed(seed)
        positions.add(next(i for i, f in enumerate(image_to_clip(image, mask, 3)[0]) if np.array_equal(f, image)))
    assert len(positions) > 1


def test_clip_dataset_targets(tmp_path: Path, tiny_flags: list[str]) -> None:
    root = write_refcoco(tmp_path / "coco", ("refcoco",))
    args = parse_args(tiny_flags + ["--eval_short_side", "48"])
    dataset = RefExpClipDataset(root, "refcoco", refexp_transforms("val", args), binary=True, num_frames=3,
                                augmentation=STILL)
    clip, target = dataset[1]
    assert clip.shape == (3, 3, 48, 64)
    assert target["caption"] == SENTENCES[1][1] and target["labels"].tolist() == [0, 0, 0]
    assert target["valid"].tolist() == [1, 1, 1] and target["masks"].shape == (3, 48, 64)
    # mask-derived box of the polygon x 36..60, y 10..30 (last-index convention), cxcywh normalised
    expected = torch.tensor([(36 + 60) / 2 / 64, (10 + 30) / 2 / 48, 24 / 64, 20 / 48])
    torch.testing.assert_close(target["boxes"], expected.expand(3, 4), atol=2 / 48, rtol=0)


def test_joint_concatenates_refcoco_clips_and_ytvos(tmp_path: Path, tiny_flags: list[str], ytvos_root: Path) -> None:
    coco = write_refcoco(tmp_path / "coco")
    flags = tiny_flags + ["--dataset_file", "joint", "--coco_path", str(coco), "--ytvos_path", str(ytvos_root),
                          "--num_frames", "2", "--train_short_sides", "48", "--max_size", "64",
                          "--crop_short_sides", "48", "--crop_range", "40", "48"]
    dataset = build_dataset("train", parse_args(flags))
    ytvos = dataset.datasets[-1]
    assert len(dataset) == 3 * len(SENTENCES) + len(ytvos)
    clip, target = dataset[0]
    assert clip.shape[0] == 2 and target["masks"].shape[0] == 2 and "image_id" in target
    assert build_dataset("valid", parse_args(flags)).split == "valid"
    with pytest.raises(ValueError, match="needs --binary"):
        build_dataset("train", parse_args([f for f in flags if f != "--binary"]))


def test_joint_training_through_main(tmp_path: Path, tiny_flags: list[str], ytvos_root: Path) -> None:
    """One epoch of joint training (pseudo-clips + Ref-YTVOS); validation is Ref-YTVOS's."""
    from datasets import get_evaluator
    from datasets.ytvos import evaluate_ytvos
    from main import main

    out = tmp_path / "out"
    flags = tiny_flags + ["--dataset_file", "joint", "--coco_path", str(write_refcoco(tmp_path / "coco")),
                          "--ytvos_path", str(ytvos_root), "--train_short_sides", "96", "--max_size", "128",
                          "--crop_short_sides", "96", "--crop_range", "80", "96", "--eval_short_side", "96",
                          "--num_workers", "0", "--batch_size", "2", "--epochs", "1", "--lr_drop", "1",
                          "--eval_every", "0", "--output_dir", str(out)]
    main(parse_args(flags))
    record = json.loads((out / "log.txt").read_text().splitlines()[-1])
    assert (out / "checkpoint.pth").is_file() and np.isfinite(record["train_loss"])
    assert get_evaluator("joint") is evaluate_ytvos
