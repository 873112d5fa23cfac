"""Several expressions on one training clip (--expressions_per_clip): companions, augmentation, collation."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from datasets import build_dataset, register_dataset
from datasets.transforms_video import Check, Compose, Normalize, RandomHorizontalFlip, ToTensor
from datasets.ytvos import YTVOSDataset
from tests.datasets.ytvos_fixture import BOX_A2, box_a1
from util.misc import collate_fn

RAW = Compose([Check(), ToTensor(), Normalize(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))])
FLIP = Compose([RandomHorizontalFlip(p=1.0), Check(), ToTensor(), Normalize(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))])


def train_set(root: Path, per_clip: int, transforms=RAW, num_frames: int = 3) -> YTVOSDataset:
    return YTVOSDataset(root / "train", root / "meta_expressions" / "train" / "meta_expressions.json",
                        transforms, num_frames=num_frames, expressions_per_clip=per_clip)


def sample_index(dataset: YTVOSDataset, video: str, exp_id: str, anchor: int) -> int:
    return next(i for i, s in enumerate(dataset.samples)
                if (s["video"], s["exp_id"], s["anchor"]) == (video, exp_id, anchor))


def box_mask(height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    x1, y1, x2, y2 = box
    mask = torch.zeros(height, width)
    mask[y1:y2 + 1, x1:x2 + 1] = 1
    return mask


def test_companion_is_the_other_object_on_the_same_frames(ytvos_root: Path) -> None:
    random.seed(0)
    dataset = train_set(ytvos_root, per_clip=2)
    imgs, target = dataset[sample_index(dataset, "vid_a", "0", 0)]
    assert target["caption"] == "the person on the left" and target["exp_id"] == "0"
    (dog,) = target["companions"]
    assert dog["caption"] == "a dog" and dog["exp_id"] == "1" and dog["video_id"] == "vid_a"
    assert torch.equal(dog["frames_idx"], target["frames_idx"]) and torch.equal(dog["size"], target["size"])
    assert dog["labels"].tolist() == [13] * 3 and target["labels"].tolist() == [42] * 3
    for k, t in enumerate(target["frames_idx"].tolist()):
        assert torch.equal(target["masks"][k], box_mask(48, 64, box_a1(t)))
        assert torch.equal(dog["masks"][k], box_mask(48, 64, BOX_A2) if t < 2 else torch.zeros(48, 64))
        assert dog["valid"][k] == int(t < 2)
    assert "companions" not in dog


def test_companions_share_the_flip_and_their_captions_are_mirrored(make_ytvos_root) -> None:
    root = make_ytvos_root()
    meta = root / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(meta.read_text())
    data["videos"]["vid_a"]["expressions"]["1"]["exp"] = "the dog on the right"
    meta.write_text(json.dumps(data))
    random.seed(0)
    dataset = train_set(root, per_clip=2, transforms=FLIP)
    _, target = dataset[sample_index(dataset, "vid_a", "0", 0)]
    (dog,) = target["companions"]
    assert target["caption"] == "the person on the right" and dog["caption"] == "the dog on the left"
    frame0 = target["frames_idx"].tolist().index(0)
    assert torch.equal(dog["masks"][frame0], box_mask(48, 64, BOX_A2).flip(-1))
    assert torch.equal(target["masks"][frame0], box_mask(48, 64, box_a1(0)).flip(-1))


def test_companion_count_is_capped_by_the_other_objects(ytvos_root: Path) -> None:
    random.seed(0)
    dataset = train_set(ytvos_root, per_clip=4)
    _, target = dataset[sample_index(dataset, "vid_a", "1", 0)]
    assert [c["exp_id"] for c in target["companions"]] == ["0"]
    _, alone = dataset[sample_index(dataset, "vid_b", "0", 0)]
    assert alone["companions"] == []


def test_companion_without_a_visible_frame_is_dropped(ytvos_root: Path) -> None:
    random.seed(0)
    dataset = train_set(ytvos_root, per_clip=2)
    _, target = dataset[sample_index(dataset, "vid_a", "0", 6)]
    assert min(target["frames_idx"].tolist()) >= 3
    assert target["companions"] == []


def test_one_expression_per_clip_has_no_companions_key(ytvos_root: Path) -> None:
    random.seed(0)
    _, target = train_set(ytvos_root, per_clip=1)[0]
    assert "companions" not in target and "companion_captions" not in target


def test_collate_flattens_companions_with_their_clip_index(ytvos_root: Path) -> None:
    random.seed(0)
    dataset = train_set(ytvos_root, per_clip=2)
    batch = [dataset[sample_index(dataset, "vid_b", "0", 0)], dataset[sample_index(dataset, "vid_a", "0", 0)]]
    samples, targets = collate_fn(batch)
    assert samples.tensors.shape[0] == 2
    assert [(t["video_id"], t["exp_id"], t["clip_index"]) for t in targets] == [
        ("vid_b", "0", 0), ("vid_a", "0", 1), ("vid_a", "1", 1)]
    assert all("companions" not in t for t in targets)
    _, plain = collate_fn([train_set(ytvos_root, per_clip=1)[0]])
    assert "clip_index" not in plain[0]


def test_build_dataset_refuses_expressions_per_clip_where_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    from argparse import Namespace

    import datasets

    monkeypatch.setattr(datasets, "DATASETS", dict(datasets.DATASETS))
    register_dataset("one_per_clip")(lambda image_set, args: [])
    with pytest.raises(ValueError, match="expressions_per_clip 2.*'one_per_clip'"):
        build_dataset("train", Namespace(dataset_file="one_per_clip", expressions_per_clip=2))
    assert build_dataset("valid", Namespace(dataset_file="one_per_clip", expressions_per_clip=2)) == []


def test_expressions_per_clip_must_be_positive(ytvos_root: Path) -> None:
    with pytest.raises(ValueError, match="expressions_per_clip must be >= 1"):
        train_set(ytvos_root, per_clip=0)
