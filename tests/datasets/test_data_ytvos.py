"""YTVOSDataset / VideoExpressionSet on a tiny fixture in the real Ref-YouTube-VOS format."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets.ytvos as ytvos
from datasets.transforms_video import Check, Compose, Normalize, ToTensor, make_video_transforms
from datasets.ytvos import (YTVOS_CATEGORIES, VideoExpressionSet, YTVOSDataset, clean_caption,
                            sample_clip_indices)
from tests.datasets.ytvos_fixture import BOX_A2, FRAME_NAMES_A, box_a1

RAW = Compose([Check(), ToTensor(), Normalize(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))])
TINY = dict(train_short_sides=[32, 40], max_size=64, crop_short_sides=[48, 56], crop_range=(24, 48),
            eval_short_side=24)


def train_set(root: Path, transforms=RAW, num_frames: int = 3, **kwargs) -> YTVOSDataset:
    return YTVOSDataset(root / "train", root / "meta_expressions" / "train" / "meta_expressions.json",
                        transforms, num_frames=num_frames, **kwargs)


def find_sample(dataset: YTVOSDataset, video: str, exp_id: str, anchor: int) -> int:
    return next(i for i, s in enumerate(dataset.samples)
                if (s["video"], s["exp_id"], s["anchor"]) == (video, exp_id, anchor))


def test_index_has_one_sample_per_expression_and_anchor(ytvos_root: Path) -> None:
    dataset = train_set(ytvos_root, num_frames=3)
    anchors = sorted((s["video"], s["exp_id"], s["anchor"]) for s in dataset.samples)
    assert anchors == [("vid_a", "0", 0), ("vid_a", "0", 3), ("vid_a", "0", 6),
                       ("vid_a", "1", 0), ("vid_a", "1", 3), ("vid_a", "1", 6), ("vid_b", "0", 0)]
    assert len(train_set(ytvos_root, num_frames=5)) == 2 * 2 + 1


def test_sample_fields_boxes_masks_and_frame_order(ytvos_root: Path) -> None:
    random.seed(0)
    dataset = train_set(ytvos_root, num_frames=3)
    imgs, target = dataset[find_sample(dataset, "vid_a", "0", 3)]
    assert imgs.shape == (3, 3, 48, 64) and imgs.dtype == torch.float32
    assert target["frames_idx"].dtype == torch.long and target["labels"].dtype == torch.long
    assert target["valid"].dtype == torch.long and target["masks"].dtype == torch.float32
    assert target["labels"].tolist() == [YTVOS_CATEGORIES["person"]] * 3 == [42] * 3
    assert target["caption"] == "the person on the left"
    assert (target["video_id"], target["exp_id"]) == ("vid_a", "0")
    assert target["orig_size"].tolist() == [48, 64] and target["size"].tolist() == [48, 64]
    indices = target["frames_idx"].tolist()
    assert indices == sorted(indices) and 3 in indices and all(0 <= i < 8 for i in indices)
    assert target["valid"].tolist() == [1, 1, 1]
    for k, t in enumerate(indices):
        red = imgs[k, 0].mean().item() * 255
        assert abs(red - 20 * t) < 3, "frame content must match frames_idx (sorted frame names)"
        x1, y1, x2, y2 = box_a1(t)
        expected = torch.tensor([(x1 + x2) / 2 / 64, (y1 + y2) / 2 / 48, (x2 - x1) / 64, (y2 - y1) / 48])
        assert torch.allclose(target["boxes"][k], expected, atol=1e-6)
        mask = target["masks"][k]
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        assert mask[y1:y2 + 1, x1:x2 + 1].all() and mask.sum() == (x2 - x1 + 1) * (y2 - y1 + 1)


def test_absent_frames_get_zero_boxes_and_invalid_flags(ytvos_root: Path) -> None:
    random.seed(1)
    dataset = train_set(ytvos_root, num_frames=3)
    _, target = dataset[find_sample(dataset, "vid_a", "1", 0)]
    for k, t in enumerate(target["frames_idx"].tolist()):
        if t < 2:
            x1, y1, x2, y2 = BOX_A2
            assert target["valid"][k] == 1 and target["masks"][k].sum() == 100
            assert torch.allclose(target["boxes"][k, 2:], torch.tensor([(x2 - x1) / 64, (y2 - y1) / 48]))
        else:
            assert target["valid"][k] == 0 and target["masks"][k].sum() == 0
            assert target["boxes"][k].abs().sum() == 0


def test_resamples_when_the_object_is_absent_from_the_clip(ytvos_root: Path) -> None:
    dataset = train_set(ytvos_root, num_frames=1)
    absent = find_sample(dataset, "vid_a", "1", 6)
    _, raw_target = dataset.load_clip(absent)
    assert raw_target["valid"].tolist() == [0]
    random.seed(3)
    for _ in range(10):
        _, target = dataset[absent]
        assert target["valid"].tolist() == [1]
        assert (target["video_id"], target["exp_id"], target["frames_idx"].item()) != ("vid_a", "1", 6)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("video_len", [1, 2, 4, 7, 30])
def test_sample_clip_indices_invariants(num_frames: int, video_len: int) -> None:
    rng = random.Random(num_frames * 100 + video_len)
    for anchor in range(0, video_len, max(1, num_frames)):
        for _ in range(20):
            indices = sample_clip_indices(anchor, video_len, num_frames, rng)
            assert len(indices) == num_frames and indices == sorted(indices)
            assert all(0 <= i < video_len for i in indices) and anchor in indices
            assert len([i for i in indices if abs(i - anchor) <= 3]) >= min(num_frames, 2)
            if video_len >= 30:
                assert len(set(indices)) >= num_frames - 2, "only clamping/the local max can repeat a frame"


def test_sample_clip_indices_matches_reference_rules() -> None:
    rng = random.Random(0)
    for _ in range(50):
        indices = sample_clip_indices(10, 40, 5, rng)
        before = [i for i in indices if 7 <= i < 10]
        after = [i for i in indices if 10 < i <= 13]
        assert before and after, "one local frame 1-3 before and one 1-3 after the anchor"
    assert sample_clip_indices(0, 1, 5, rng) == [0] * 5
    assert sample_clip_indices(4, 8, 1, rng) == [4]


def test_custom_category_table(ytvos_root: Path) -> None:
    dataset = train_set(ytvos_root, categories={"person": 0, "dog": 1, "others": 2})
    assert {s["category_id"] for s in dataset.samples} == {0, 1, 2}
    with pytest.raises(ValueError, match=r"meta\.json.*'dog'"):
        train_set(ytvos_root, categories={"person": 0, "others": 2})


def test_train_transform_output_is_consistent(ytvos_root: Path) -> None:
    random.seed(0)
    dataset = train_set(ytvos_root, make_video_transforms("train", **TINY), num_frames=3)
    for idx in range(len(dataset)):
        imgs, target = dataset[idx]
        h, w = target["size"].tolist()
        assert imgs.shape == (3, 3, h, w) and target["masks"].shape == (3, h, w)
        assert max(h, w) <= 64 and (min(h, w) in (32, 40) or max(h, w) >= 63)
        assert target["boxes"].min() >= 0 and target["boxes"].max() <= 1
        invalid = target["valid"] == 0
        assert target["boxes"][invalid].abs().sum() == 0 and target["valid"].any()
        assert set(target["masks"].unique().tolist()) <= {0.0, 1.0}


def test_clean_caption() -> None:
    assert clean_caption("  A  Man\tIn\nRed ") == "a man in red"


def test_video_expression_set_items(ytvos_root: Path) -> None:
    transform = make_video_transforms("valid", **TINY)
    dataset = VideoExpressionSet(ytvos_root, "valid", transform)
    assert [(i["video_id"], i["exp_id"]) for i in dataset] == [("vid_c", "0"), ("vid_c", "1"), ("vid_d", "0")]
    item = dataset[0]
    assert item["caption"] == "The Left Box" and item["obj_id"] == 1
    assert item["frame_names"] == ["00000", "00001", "00002", "00003"]
    assert item["orig_size"] == (32, 48) and item["size"] == (24, 36)
    assert item["frames"].shape == (4, 3, 24, 36) and item["frames"].dtype == torch.float32
    gt = item["gt_masks"]
    assert gt.dtype == np.uint8 and gt.shape == (4, 32, 48) and set(np.unique(gt)) == {0, 1}
    for t in range(4):
        assert gt[t, 2:12, 2 + t:12 + t].all() and gt[t].sum() == 100
    assert dataset[1]["gt_masks"][:, 20:26, 20:30].all() and dataset[1]["gt_masks"].sum() == 4 * 60
    assert dataset[2]["gt_masks"] is None


def test_video_expression_set_decodes_each_video_once(ytvos_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    original = ytvos.load_frame

    def counting(path: Path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(ytvos, "load_frame", counting)
    dataset = VideoExpressionSet(ytvos_root, "valid", make_video_transforms("valid", **TINY))
    dataset[0], dataset[1]
    assert len(calls) == 4
    dataset[2]
    assert len(calls) == 6


def test_eval_transform_without_cap_keeps_aspect(ytvos_root: Path) -> None:
    dataset = VideoExpressionSet(ytvos_root, "valid", make_video_transforms("valid", **dict(TINY, eval_short_side=64)))
    assert dataset[0]["size"] == (64, 96)


def test_malformed_meta_expressions_names_file_and_field(make_ytvos_root) -> None:
    root = make_ytvos_root()
    path = root / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(path.read_text())
    del data["videos"]["vid_b"]["frames"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"meta_expressions\.json.*vid_b.*'frames'"):
        train_set(root)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"meta_expressions\.json: not valid JSON"):
        train_set(root)


def test_missing_frame_names_the_file(make_ytvos_root) -> None:
    root = make_ytvos_root()
    (root / "valid" / "JPEGImages" / "vid_c" / "00002.jpg").unlink()
    dataset = VideoExpressionSet(root, "valid", make_video_transforms("valid", **TINY))
    with pytest.raises(FileNotFoundError, match=r"vid_c/00002\.jpg"):
        dataset[0]


def test_missing_object_in_meta_json(make_ytvos_root) -> None:
    root = make_ytvos_root()
    path = root / "train" / "meta.json"
    data = json.loads(path.read_text())
    del data["videos"]["vid_a"]["objects"]["2"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"meta\.json: no object '2' for video 'vid_a'"):
        train_set(root)


def test_frame_names_are_sorted(ytvos_root: Path) -> None:
    dataset = train_set(ytvos_root)
    assert dataset.samples[0]["frames"] == FRAME_NAMES_A
