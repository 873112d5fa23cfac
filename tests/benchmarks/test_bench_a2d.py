"""A2D-Sentences: real-format fixture read back, MTTR files rebuilt identically, metrics, train + --eval."""
from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from datasets.a2d import (A2DSentencesDataset, a2d_coco_gt, build_a2d, build_a2d_samples, centred_window,
                          load_a2d_samples, read_instance_masks)
from datasets.a2d_eval import precision_and_iou, referring_metrics, _coco
from tests.benchmarks.bench_fixtures import A2D_MASKS, A2D_TEST_SAMPLES, A2D_TRAIN_SAMPLES, coco_gt, rect_mask, write_a2d_tree


@pytest.fixture(scope="module")
def a2d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_a2d_tree(tmp_path_factory.mktemp("a2d_sentences"))


def _args(root: Path, **overrides: object) -> Namespace:
    base = dict(a2d_path=str(root), num_frames=3, eval_short_side=48, max_size=64, train_short_sides=[48],
                crop_short_sides=[48], crop_range=[40, 48], no_photometric=True)
    return Namespace(**(base | overrides))


def test_h5_masks_are_transposed_back(a2d_root: Path) -> None:
    h5 = a2d_root / "text_annotations" / "a2d_annotation_with_instances"
    ids, masks = read_instance_masks(h5 / "testvid01" / "00002.h5")
    assert ids == [1, 2] and masks.shape == (2, 48, 64)
    assert np.array_equal(masks[0], A2D_MASKS[("testvid01", 2)][1])
    ids, masks = read_instance_masks(h5 / "testvid01" / "00004.h5")  # single instance stored as [W, H]
    assert ids == [1] and np.array_equal(masks[0], A2D_MASKS[("testvid01", 4)][1])


def test_samples_and_ground_truth_rebuilt_like_mttr(a2d_root: Path) -> None:
    assert build_a2d_samples(a2d_root, "test") == [tuple(s) for s in A2D_TEST_SAMPLES]
    assert load_a2d_samples(a2d_root, "train") == [tuple(s) for s in A2D_TRAIN_SAMPLES]
    assert build_a2d_samples(a2d_root, "train") == [tuple(s) for s in A2D_TRAIN_SAMPLES]
    dataset = build_a2d("test", _args(a2d_root))
    given = a2d_coco_gt(dataset)
    (a2d_root / "a2d_sentences_test_annotations_in_coco_format.json").rename(a2d_root / "gt.json")
    try:
        built = a2d_coco_gt(dataset)
    finally:
        (a2d_root / "gt.json").rename(a2d_root / "a2d_sentences_test_annotations_in_coco_format.json")
    assert [i["id"] for i in built["images"]] == [i["id"] for i in given["images"]]
    assert [a["segmentation"] for a in built["annotations"]] == [a["segmentation"] for a in given["annotations"]]


def test_centred_window_clamps_with_edge_frames() -> None:
    assert centred_window(0, 5, 0, 4) == [0, 0, 0, 1, 2]
    assert centred_window(4, 4, 0, 4) == [2, 3, 4, 4]
    assert centred_window(2, 1, 1, 3) == [2]


def test_test_item_has_the_annotated_frame_and_its_mask(a2d_root: Path) -> None:
    dataset = build_a2d("val", _args(a2d_root))
    imgs, target = dataset[1]  # testvid01 frame 4 (0-based 3), window [2, 3, 4]
    assert imgs.shape == (3, 3, 48, 64)
    assert target["frames_idx"].tolist() == [2, 3, 4] and target["valid_indices"].tolist() == [1]
    assert target["image_id"] == "v_testvid01_f_4_i_1"
    assert target["caption"] == "the red ball on the left"
    assert torch.equal(target["masks"][0].bool(), torch.from_numpy(A2D_MASKS[("testvid01", 4)][1]).bool())
    assert target["orig_size"].tolist() == [48, 64] and target["valid"].tolist() == [1]
    # decoded frame order: red channel 40 * t, de-normalised
    red = imgs[:, 0].mean(dim=(1, 2)) * 0.229 + 0.485
    assert np.allclose(red.numpy() * 255, [80, 120, 160], atol=12)


def test_train_item_samples_around_the_annotated_frame(a2d_root: Path) -> None:
    dataset = build_a2d("train", _args(a2d_root))
    assert isinstance(dataset, A2DSentencesDataset)
    for _ in range(3):
        imgs, target = dataset[0]
        anchor_pos = int(target["valid_indices"])
        assert target["frames_idx"][anchor_pos] == 2
        assert imgs.shape[0] == 3 and target["masks"].shape[0] == 1 and target["labels"].tolist() == [0]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def test_metrics_on_hand_made_predictions() -> None:
    gt_a, gt_b = rect_mask(0, 4, 0, 4, 10, 10), rect_mask(0, 2, 0, 2, 10, 10)
    gt = coco_gt([("a", gt_a), ("b", gt_b)])
    b_loose = gt_b.copy()
    b_loose[5, 0:5] = 1  # 4 true + 5 extra pixels: IoU 4/9
    preds = [{"image_id": "a", "category_id": 1, "segmentation": _rle(gt_a), "score": 0.9},
             {"image_id": "a", "category_id": 1, "segmentation": _rle(rect_mask(6, 10, 6, 10, 10, 10)), "score": 0.5},
             {"image_id": "b", "category_id": 1, "segmentation": _rle(b_loose), "score": 0.8},
             {"image_id": "b", "category_id": 1, "segmentation": _rle(gt_b), "score": 0.3}]
    m = referring_metrics(gt, preds, top1=True)
    # all queries: TP(.9) FP(.8) FP(.5) TP(.3) -> precision 1 up to recall .5, then .5: (51 + 50 * .5) / 101
    assert m["mAP"] == pytest.approx(76 / 101) and m["AP50"] == pytest.approx(76 / 101)
    assert m["top1_mAP"] == pytest.approx(51 / 101)  # top query only: b's best-scored mask misses
    assert m["AP_medium"] == -1  # COCOeval's "no ground truth in this area range"
    assert m["P@0.5"] == 0.5 and m["P@0.9"] == 0.5
    assert m["overall_iou"] == pytest.approx(20 / 25)
    assert m["mean_iou"] == pytest.approx((1 + 4 / 9) / 2)
    assert m["n"] == 2


def test_iou_edge_cases_empty_masks_and_missing_predictions() -> None:
    empty = np.zeros((6, 6), np.uint8)
    gt = _coco(coco_gt([("empty", empty), ("dot", rect_mask(2, 3, 2, 3, 6, 6)), ("unpredicted", rect_mask(0, 2, 0, 2, 6, 6))]))
    preds = [{"image_id": "empty", "segmentation": _rle(empty), "score": 0.4},
             {"image_id": "dot", "segmentation": _rle(rect_mask(2, 3, 2, 3, 6, 6)), "score": 0.1}]
    m = precision_and_iou(gt, preds)
    assert m["P@0.9"] == pytest.approx(2 / 3)  # empty vs empty scores 1; a one-pixel exact hit scores 1
    assert m["overall_iou"] == pytest.approx(1 / 5)  # (0 + 1 + 0) / (0 + 1 + 4)
    with pytest.raises(ValueError, match="not in the ground truth"):
        referring_metrics(coco_gt([("x", empty)]), [{"image_id": "y", "category_id": 1, "segmentation": _rle(empty),
                                                     "score": 1.0}])


def test_train_one_epoch_then_eval_from_main(a2d_root: Path, tmp_path: Path, tiny_session_flags: list[str]) -> None:
    from main import main
    from opts import parse_args

    out = tmp_path / "out"
    args = parse_args(tiny_session_flags + [
        "--dataset_file", "a2d", "--a2d_path", str(a2d_root), "--output_dir", str(out), "--epochs", "1",
        "--num_frames", "3", "--train_short_sides", "64", "--crop_short_sides", "64", "--crop_range", "56", "64",
        "--no_photometric", "--batch_size", "2", "--a2d_top1_map", "--lr_drop", "5"])
    stats = main(args)
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert log[0]["epoch"] == 0 and np.isfinite(log[0]["train_loss"])
    for key in ("mAP", "AP50", "AP75", "top1_mAP", "overall_iou", "mean_iou", "P@0.5", "P@0.9"):
        assert 0.0 <= stats[key] <= 1.0, key
    assert stats["n"] == len(A2D_TEST_SAMPLES)
    assert log[0]["val_mAP"] == pytest.approx(stats["mAP"])
