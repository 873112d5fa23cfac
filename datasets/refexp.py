"""RefCOCO / RefCOCO+ / RefCOCOg: image-level pre-training (one-frame clips) and its evaluation (spec 5.1, 5.2, 6.6).

Layout read (``root`` = --coco_path, e.g. data/coco), as written by the ReferFormer conversion of the REFER files::

    root/train2014/<file_name>.jpg
    root/<name>/instances_<name>_<split>.json    name: refcoco, refcoco+, refcocog
        COCO format with one "image" per *sentence*: images [{id, file_name, height, width, caption, ...}],
        annotations [{image_id, segmentation (polygons or RLE), bbox [x, y, w, h], category_id, ...}],
        categories [...]; splits train, val, testA, testB (refcoco, refcoco+) or train, val, test (refcocog).

``--dataset_file all`` trains on the three training sets together and evaluates each validation set;
``--dataset_file joint`` adds them as pseudo-clips to Ref-YouTube-VOS training (:class:`RefExpClipDataset`). Evaluation
(:func:`evaluate_refexp`) scores the model's one-frame predictions: COCO mask and box AP of all queries and, for
the top query, mask P@K / overall / mean IoU (RIS; the release reports overall IoU) and box P@K / mean IoU (REC;
the release reports box P@0.5).
"""
from __future__ import annotations

import json
import logging
from argparse import Namespace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from datasets import register_dataset, register_evaluator
from datasets.a2d_eval import IOU_EPS, PRECISION_THRESHOLDS, _coco, _eval_loader, coco_ap, referring_metrics
from datasets.image_to_clip import ClipAugmentation, image_to_clip
from datasets.transforms_video import make_video_transforms
from datasets.ytvos import (build_ytvos_split, clean_caption, evaluate_ytvos, first_visible_sample, object_rows,
                            transforms_from_args)
from models.postprocessors import A2DSentencesPostProcess
from util.box_ops import box_cxcywh_to_xyxy
from util.dist import all_gather_object, is_main_process
from util.misc import targets_to

logger = logging.getLogger(__name__)

REFEXP_NAMES = ("refcoco", "refcoco+", "refcocog")
IMAGE_DIR = "train2014"
# The image transform of the release (transforms_image.py): plain branch shorter side 480..768 (max 800); crop
# branch resize {400, 500, 600}, crop 384..600, then shorter side 296..512 (max 640); evaluation 360 (max 640).
TRAIN_SHORT_SIDES = list(range(480, 769, 32))
TRAIN_MAX_SIZE = 800
CROP_SHORT_SIDES = [400, 500, 600]
CROP_RANGE = (384, 600)
CROP_FINAL = ([296, 328, 360, 392, 416, 448, 480, 512], 640)
EVAL_MAX_SIZE = 640


def annotation_file(root: Path, name: str, split: str) -> Path:
    return root / name / f"instances_{name}_{split}.json"


def decode_segmentation(segmentation: Any, height: int, width: int, source: str) -> np.ndarray:
    """Binary [H, W] mask of a COCO segmentation (polygon list or RLE)."""
    from pycocotools import mask as mask_util

    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError(f"{source}: empty polygon list")
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_util.frPyObjects(rle, height, width)
    else:
        raise ValueError(f"{source}: segmentation must be polygons or an RLE dict, got {type(segmentation).__name__}")
    return mask_util.decode(rle).astype(bool)


def load_refexp_split(path: Path) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """The COCO dict and its (image entry, annotation) pairs in image order; each sentence has one annotation."""
    if not path.is_file():
        raise FileNotFoundError(f"RefCOCO annotations not found: {path} (expected under --coco_path)")
    data = json.loads(path.read_text())
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{path}: missing '{key}' (expected the COCO-format file of the ReferFormer conversion)")
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], ann)
    pairs = []
    for image in data["images"]:
        for field in ("id", "file_name", "height", "width", "caption"):
            if field not in image:
                raise ValueError(f"{path}: image entry {image.get('id', '?')} lacks '{field}'")
        if image["id"] not in by_image:
            raise ValueError(f"{path}: sentence {image['id']} ({image['caption']!r}) has no annotation")
        pairs.append((image, by_image[image["id"]]))
    return data, pairs


class RefExpDataset(Dataset):
    """One item per sentence: a one-frame clip [1, 3, h, w] and its target (box, mask, caption)."""

    def __init__(self, root: Path, name: str, split: str, transforms: Callable, binary: bool, train: bool):
        self.root = Path(root)
        self.name = name
        self.split = split
        self.ann_file = annotation_file(self.root, name, split)
        self.coco, self.pairs = load_refexp_split(self.ann_file)
        self.transforms = transforms
        self.binary = binary
        self.train = train
        logger.info("%s: %d sentences", self.ann_file, len(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, idx: int) -> tuple[Image.Image, np.ndarray, dict[str, Any], dict[str, Any]]:
        """Image, bool mask, image entry and annotation of sentence ``idx``, checked against each other."""
        image_entry, ann = self.pairs[idx]
        path = self.root / IMAGE_DIR / image_entry["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image of sentence {image_entry['id']} in {self.ann_file} not found")
        image = Image.open(path).convert("RGB")
        height, width = int(image_entry["height"]), int(image_entry["width"])
        if image.size != (width, height):
            raise ValueError(f"{path}: {image.size[1]}x{image.size[0]} (HxW) but {self.ann_file} says {height}x{width}")
        mask = decode_segmentation(ann["segmentation"], height, width, f"{self.ann_file} annotation {ann.get('id')}")
        return image, mask, image_entry, ann

    def label(self, ann: dict[str, Any]) -> int:
        return 0 if self.binary else int(ann["category_id"])

    def transformed(self, images: list[Image.Image], rows: dict[str, Tensor],
                    image_entry: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """The transforms applied to the frames and a target of per-frame ``rows`` (labels, boxes, masks, valid)
        plus the sentence's caption, sizes and id."""
        width, height = images[0].size
        target = {
            "frames_idx": torch.arange(len(images)),
            **rows,
            "caption": clean_caption(image_entry["caption"]),
            "orig_size": torch.tensor([height, width], dtype=torch.long),
            "size": torch.tensor([height, width], dtype=torch.long),
            "image_id": image_entry["id"],
        }
        frames, target = self.transforms(images, target)
        target["valid"] = target["valid"].long()
        return frames, target

    def load_sample(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        image, mask, image_entry, ann = self.read(idx)
        height, width = mask.shape
        x, y, w, h = ann["bbox"]
        box = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
        box[:, 0::2].clamp_(0, width)
        box[:, 1::2].clamp_(0, height)
        rows = {"labels": torch.tensor([self.label(ann)], dtype=torch.long), "boxes": box,
                "masks": torch.from_numpy(mask.astype(np.float32))[None],
                "valid": torch.tensor([int(w > 0 and h > 0)], dtype=torch.long)}
        return self.transformed([image], rows, image_entry)

    def __getitem__(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        if not self.train:
            return self.load_sample(idx)
        return first_visible_sample(self.load_sample, idx, len(self), str(self.ann_file))


class RefExpClipDataset(RefExpDataset):
    """Joint training: each sentence's image becomes a ``num_frames`` pseudo-clip (datasets/image_to_clip.py);
    boxes come from the transformed masks; then the Ref-YTVOS video transforms."""

    def __init__(self, root: Path, name: str, transforms: Callable, binary: bool, num_frames: int,
                 augmentation: ClipAugmentation = ClipAugmentation()):
        super().__init__(root, name, "train", transforms, binary, train=True)
        self.num_frames = num_frames
        self.augmentation = augmentation

    def load_sample(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        image, mask, image_entry, ann = self.read(idx)
        frames, masks = image_to_clip(np.asarray(image), mask, self.num_frames, self.augmentation)
        rows = object_rows([m.astype(np.uint8) for m in masks], 1, self.label(ann))  # masks as label maps
        return self.transformed([Image.fromarray(f) for f in frames], rows, image_entry)


def refexp_transforms(image_set: str, args: Namespace) -> Callable:
    """The release's image transform (flip with left/right swap, multi-scale resize or crop) or the eval resize."""
    return make_video_transforms(image_set, train_short_sides=TRAIN_SHORT_SIDES, max_size=TRAIN_MAX_SIZE,
                                 crop_short_sides=CROP_SHORT_SIDES, crop_range=CROP_RANGE,
                                 eval_short_side=args.eval_short_side, photometric=False,
                                 eval_max_size=EVAL_MAX_SIZE, crop_final=CROP_FINAL)


def split_name(image_set: str) -> str:
    """'val'/'valid' -> 'val'; 'train', 'test', 'testA', 'testB' as given."""
    return "val" if image_set in ("val", "valid") else image_set


def coco_root(args: Namespace) -> Path:
    root = Path(args.coco_path)
    if not root.is_dir():
        raise FileNotFoundError(f"RefCOCO root {root} does not exist (--coco_path)")
    return root


def build_refexp(name: str, image_set: str, args: Namespace) -> RefExpDataset:
    train = image_set == "train"
    return RefExpDataset(coco_root(args), name, split_name(image_set),
                         refexp_transforms("train" if train else "val", args), binary=args.binary, train=train)


def _register(name: str) -> None:
    register_dataset(name)(lambda image_set, args: build_refexp(name, image_set, args))
    register_evaluator(name)(lambda model, postprocessors, args, device:
                             evaluate_refexp(model, build_refexp(name, "val", args), args, device))


for _name in REFEXP_NAMES:
    _register(_name)


@register_dataset("all")
def build_refexp_all(image_set: str, args: Namespace) -> Dataset:
    """Training: the three training sets concatenated (the release's pre-training set)."""
    if image_set != "train":
        raise ValueError("--dataset_file all has no single evaluation split; its evaluator scores the three val sets")
    return ConcatDataset([build_refexp(name, "train", args) for name in REFEXP_NAMES])


@register_dataset("joint")
def build_joint(image_set: str, args: Namespace) -> Dataset:
    """Training: RefCOCO/+/g sentences as pseudo-clips plus Ref-YouTube-VOS train (the release's joint training);
    evaluation: Ref-YouTube-VOS (--ytvos_path)."""
    root = Path(args.ytvos_path)
    if image_set != "train":
        return build_ytvos_split(root, image_set, args)
    if not args.binary:
        raise ValueError("--dataset_file joint needs --binary: RefCOCO and Ref-YouTube-VOS categories differ "
                         "(the release's main_joint.py forces it)")
    clips = [RefExpClipDataset(coco_root(args), name, transforms_from_args("train", args), args.binary,
                               args.num_frames) for name in REFEXP_NAMES]
    return ConcatDataset([*clips, build_ytvos_split(root, "train", args)])


register_evaluator("joint")(evaluate_ytvos)


@register_evaluator("all")
def evaluate_refexp_all(model: nn.Module, postprocessors: dict, args: Namespace, device: Any) -> dict[str, Any]:
    """Each validation set in turn; metric names carry the set's name (refcoco_P@0.5, ...)."""
    metrics: dict[str, Any] = {}
    for name in REFEXP_NAMES:
        result = evaluate_refexp(model, build_refexp(name, "val", args), args, device)
        metrics.update({f"{name}_{key}": value for key, value in result.items()})
    return metrics


def box_metrics(gt: dict[str, Any], top_boxes: dict[Any, list[float]]) -> dict[str, float]:
    """REC: P@K and mean IoU of each sentence's top-scoring box (xyxy, original pixels) against its bbox."""
    hits = {k: 0 for k in PRECISION_THRESHOLDS}
    ious = []
    boxes = {ann["image_id"]: ann["bbox"] for ann in gt["annotations"]}
    for image in gt["images"]:
        x, y, w, h = boxes[image["id"]]
        px1, py1, px2, py2 = top_boxes.get(image["id"], (0.0, 0.0, 0.0, 0.0))
        inter = max(0.0, min(px2, x + w) - max(px1, x)) * max(0.0, min(py2, y + h) - max(py1, y))
        union = (px2 - px1) * (py2 - py1) + w * h - inter
        iou = (inter + IOU_EPS) / (union + IOU_EPS)
        ious.append(iou)
        for k in PRECISION_THRESHOLDS:
            hits[k] += iou > k
    n = max(len(ious), 1)
    return {**{f"box_P@{k}": hits[k] / n for k in PRECISION_THRESHOLDS}, "box_mean_iou": float(np.mean(ious))}


def coco_ground_truth(data: dict[str, Any]) -> dict[str, Any]:
    """The split's COCO dict for class-agnostic scoring: every object (and prediction) is category 1, because
    COCOeval only collects predictions of the ground truth's categories even with useCats 0; iscrowd and area
    are filled in if absent."""
    annotations = [{"iscrowd": 0, "area": float(ann["bbox"][2] * ann["bbox"][3]), **ann, "category_id": 1}
                   for ann in data["annotations"]]
    return {"images": data["images"], "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}


@torch.no_grad()
def predict_refexp(model: nn.Module, dataset: RefExpDataset, args: Namespace,
                   device: torch.device) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[Any, list[float]]]:
    """This rank's mask and box (xywh) predictions of every query, scored, and the top query's box (xyxy) per
    sentence."""
    model.eval()
    postprocess = A2DSentencesPostProcess(args.threshold)
    masks: list[dict[str, Any]] = []
    boxes_xywh: list[dict[str, Any]] = []
    top_boxes: dict[Any, list[float]] = {}
    for samples, targets in _eval_loader(dataset, args):
        captions = [t["caption"] for t in targets]
        image_ids = [t["image_id"] for t in targets]
        targets = targets_to(targets, device)
        outputs = model(samples.to(device), captions, targets)
        orig_sizes = [t["orig_size"].tolist() for t in targets]
        results = postprocess(outputs, orig_sizes, [t["size"].tolist() for t in targets])
        boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"][:, 0]).cpu()
        for b, (image_id, result, (height, width)) in enumerate(zip(image_ids, results, orig_sizes)):
            masks.extend({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(score)}
                         for score, rle in zip(result["scores"], result["rle_masks"]))
            scaled = boxes[b] * torch.tensor([width, height, width, height], dtype=boxes.dtype)
            boxes_xywh.extend({"image_id": image_id, "category_id": 1, "score": float(score),
                               "bbox": [x1, y1, x2 - x1, y2 - y1]}
                              for score, (x1, y1, x2, y2) in zip(result["scores"], scaled.tolist()))
            top_boxes[image_id] = scaled[int(result["scores"].argmax())].tolist()
    return masks, boxes_xywh, top_boxes


def evaluate_refexp(model: nn.Module, dataset: RefExpDataset, args: Namespace, device: torch.device) -> dict[str, Any]:
    """Predict (split across ranks), gather and score on rank 0; every rank returns the same metrics."""
    masks, boxes, top_boxes = predict_refexp(model, dataset, args, device)
    masks = [p for part in all_gather_object(masks) for p in part]
    boxes = [p for part in all_gather_object(boxes) for p in part]
    top_boxes = {k: v for part in all_gather_object(top_boxes) for k, v in part.items()}
    metrics: Optional[dict[str, Any]] = None
    if is_main_process():
        gt = coco_ground_truth(dataset.coco)
        metrics = referring_metrics(gt, masks)
        metrics.update({f"box_{k}": v for k, v in coco_ap(_coco(gt), boxes, "bbox").items()})
        metrics.update(box_metrics(gt, top_boxes))
        logger.info("%s %s: %s", dataset.name, dataset.split,
                    ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return all_gather_object(metrics)[0]
