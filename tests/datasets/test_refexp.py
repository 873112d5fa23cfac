"""RefCOCO / RefCOCO+ / RefCOCOg in the layout of the ReferFormer conversion: samples, transforms, errors,
the REC/RIS evaluation (against a model that outputs the ground truth) and pre-training through main.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import datasets.refexp as refexp
from datasets import build_dataset, get_evaluator
from main import main
from opts import parse_args

# (file, caption, polygon [x0, y0, x1, y0, x1, y1, x0, y1] of the object, bbox [x, y, w, h]); images are 48x64
SENTENCES = [
    ("a.jpg", "the Red box on the left", [4, 8, 20, 8, 20, 40, 4, 40], [4, 8, 16, 32]),
    ("a.jpg", "the blue box", [36, 10, 60, 10, 60, 30, 36, 30], [36, 10, 24, 20]),
    ("b.jpg", "a green square", [10, 10, 30, 10, 30, 30, 10, 30], [10, 10, 20, 20]),
]
HEIGHT, WIDTH = 48, 64


def write_refcoco(root: Path, names: tuple[str, ...] = refexp.REFEXP_NAMES) -> Path:
    """train2014 images and, for each name, train and val files with one image entry per sentence."""
    (root / "train2014").mkdir(parents=True)
    for file_name, colour in (("a.jpg", (200, 30, 30)), ("b.jpg", (30, 200, 30))):
        image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        image[8:40, 4:20] = colour
        Image.fromarray(image).save(root / "train2014" / file_name, quality=95)
    for name in names:
        (root / name).mkdir()
        for split in ("train", "val"):
            images = [{"id": i, "file_name": f, "height": HEIGHT, "width": WIDTH, "caption": c, "original_id": 7}
                      for i, (f, c, _, _) in enumerate(SENTENCES)]
            annotations = [{"id": 100 + i, "image_id": i, "segmentation": [poly], "bbox": box, "category_id": 3,
                            "iscrowd": 0, "area": box[2] * box[3]} for i, (_, _, poly, box) in enumerate(SENTENCES)]
            data = {"images": images, "annotations": annotations, "categories": [{"id": 3, "name": "car"}]}
            (root / name / f"instances_{name}_{split}.json").write_text(json.dumps(data))
    return root


@pytest.fixture()
def refcoco_flags(tmp_path: Path, tiny_flags: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tiny-model flags on the fixture, with the release's multi-scale sizes shrunk for speed (96 px keeps the
    stride-64 level at 2x2: the tiny model's 32-group GroupNorm needs more than one value per group)."""
    monkeypatch.setattr(refexp, "TRAIN_SHORT_SIDES", [96])
    monkeypatch.setattr(refexp, "TRAIN_MAX_SIZE", 128)
    monkeypatch.setattr(refexp, "CROP_SHORT_SIDES", [96])
    monkeypatch.setattr(refexp, "CROP_RANGE", (80, 96))
    monkeypatch.setattr(refexp, "CROP_FINAL", ([96], 128))
    return tiny_flags + ["--dataset_file", "refcoco", "--coco_path", str(write_refcoco(tmp_path / "coco")),
                         "--num_frames", "1", "--eval_short_side", "96", "--num_workers", "0", "--batch_size", "2",
                         "--output_dir", str(tmp_path / "out"), "--lr_drop", "1", "--print_freq", "1"]


def test_sample_is_a_one_frame_clip_with_mask_box_and_caption(tmp_path: Path, tiny_flags: list[str]) -> None:
    root = write_refcoco(tmp_path / "coco", ("refcoco",))
    args = parse_args(tiny_flags + ["--dataset_file", "refcoco", "--coco_path", str(root), "--eval_short_side", "96"])
    dataset = build_dataset("val", args)
    assert len(dataset) == 3
    frames, target = dataset[0]
    assert frames.shape == (1, 3, 96, 128)  # shorter side 96, longer side 128 <= 640
    assert target["caption"] == "the red box on the left" and target["image_id"] == 0
    assert target["labels"].tolist() == [0]  # --binary
    assert target["masks"].shape == (1, 96, 128)
    # the polygon covers x 4..20, y 8..40 of 64x48: area (16*32 px, give or take the boundary) scaled by 2x2
    assert abs(float(target["masks"].sum()) - 16 * 32 * 4) < 0.15 * 16 * 32 * 4
    torch.testing.assert_close(target["boxes"], torch.tensor([[12 / 64, 24 / 48, 16 / 64, 32 / 48]]))
    assert target["orig_size"].tolist() == [48, 64] and target["size"].tolist() == [96, 128]


def test_category_labels_without_binary(tmp_path: Path, tiny_flags: list[str]) -> None:
    root = write_refcoco(tmp_path / "coco", ("refcocog",))
    flags = [f for f in tiny_flags if f != "--binary"]
    dataset = build_dataset("val", parse_args(flags + ["--dataset_file", "refcocog", "--coco_path", str(root)]))
    assert dataset[1][1]["labels"].tolist() == [3]


def test_train_transform_sizes_and_all_concatenates(refcoco_flags: list[str]) -> None:
    args = parse_args(refcoco_flags + ["--dataset_file", "all"])
    dataset = build_dataset("train", args)
    assert len(dataset) == 3 * len(SENTENCES)
    for idx in range(len(dataset)):
        frames, target = dataset[idx]
        assert frames.shape[0] == 1 and min(frames.shape[-2:]) in (80, 96) and bool(target["valid"].all())
    with pytest.raises(ValueError, match="no single evaluation split"):
        build_dataset("val", args)


def test_bad_input_names_the_file(tmp_path: Path, tiny_flags: list[str]) -> None:
    root = write_refcoco(tmp_path / "coco", ("refcoco",))
    flags = tiny_flags + ["--dataset_file", "refcoco", "--coco_path", str(root)]
    with pytest.raises(FileNotFoundError, match="instances_refcoco\\+_train.json"):
        build_dataset("train", parse_args(flags + ["--dataset_file", "refcoco+"]))
    with pytest.raises(FileNotFoundError, match="--coco_path"):
        build_dataset("train", parse_args(flags + ["--coco_path", str(tmp_path / "nowhere")]))
    Image.new("RGB", (10, 10)).save(root / "train2014" / "b.jpg")
    with pytest.raises(ValueError, match="b.jpg: 10x10 \\(HxW\\) but .* says 48x64"):
        build_dataset("val", parse_args(flags))[2]
    path = root / "refcoco" / "instances_refcoco_val.json"
    data = json.loads(path.read_text())
    data["annotations"] = data["annotations"][:2]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sentence 2 .* has no annotation"):
        build_dataset("val", parse_args(flags))


def test_box_metrics_by_hand() -> None:
    gt = {"images": [{"id": 0}, {"id": 1}], "annotations": [{"image_id": 0, "bbox": [10, 10, 20, 20]},
                                                           {"image_id": 1, "bbox": [0, 0, 10, 10]}]}
    # sentence 0 exact; sentence 1 overlaps half: I = 50, U = 100 + 100 - 50 = 150 -> IoU 1/3
    metrics = refexp.box_metrics(gt, {0: [10, 10, 30, 30], 1: [5, 0, 15, 10]})
    assert metrics["box_P@0.5"] == 0.5 and metrics["box_P@0.9"] == 0.5
    assert metrics["box_mean_iou"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-6)


class GroundTruthModel(nn.Module):
    """Query 1 outputs the target's box and mask with a high score; query 0 a wrong box and mask, lower score."""

    def forward(self, samples: Any, captions: list[str], targets: list[dict]) -> dict[str, torch.Tensor]:
        height, width = samples.tensors.shape[-2:]
        logits, boxes, masks = [], [], []
        for target in targets:
            h, w = target["size"].tolist()
            mask = torch.zeros(height, width)
            mask[:h, :w] = target["masks"][0]
            grid = F.interpolate(mask[None, None], size=(height // 4, width // 4), mode="area")[0, 0]
            true_logits = (grid - 0.5) * 20
            logits.append(torch.tensor([[-2.0], [3.0]]))
            boxes.append(torch.stack([torch.tensor([0.9, 0.9, 0.1, 0.1]), target["boxes"][0]]))
            masks.append(torch.stack([-true_logits, true_logits]))
        return {"pred_logits": torch.stack(logits)[:, None], "pred_boxes": torch.stack(boxes)[:, None],
                "pred_masks": torch.stack(masks)[:, None]}


def test_evaluation_of_a_model_that_outputs_the_ground_truth(refcoco_flags: list[str]) -> None:
    args = parse_args(refcoco_flags)
    metrics = get_evaluator("refcoco")(GroundTruthModel(), {}, args, torch.device("cpu"))
    assert metrics["n"] == 3
    assert metrics["box_P@0.9"] == 1.0 and metrics["box_mean_iou"] > 0.99
    assert metrics["P@0.9"] == 1.0 and metrics["overall_iou"] > 0.95
    assert metrics["mAP"] > 0.9 and metrics["box_mAP"] > 0.9  # the lower-scored wrong query costs no precision
    both = get_evaluator("all")(GroundTruthModel(), {}, parse_args(refcoco_flags + ["--dataset_file", "all"]),
                                torch.device("cpu"))
    assert {f"{name}_box_P@0.5" for name in refexp.REFEXP_NAMES} <= set(both)


def test_pretraining_through_main(refcoco_flags: list[str]) -> None:
    """One epoch on RefCOCO one-frame clips, the checkpoint, then per-epoch RefCOCO validation."""
    stats = main(parse_args(refcoco_flags + ["--epochs", "1", "--eval_every", "1"]))
    out = Path(refcoco_flags[refcoco_flags.index("--output_dir") + 1])
    assert (out / "checkpoint.pth").is_file()
    record = json.loads((out / "log.txt").read_text().splitlines()[-1])
    assert np.isfinite(record["train_loss"])
    assert {"P@0.5", "overall_iou", "box_P@0.5", "mAP"} <= set(stats)
