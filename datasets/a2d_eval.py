"""A2D-Sentences / JHMDB-Sentences evaluation (spec 6.5): COCO mask AP and precision/IoU of the top query.

- mAP@[.5:.95], AP50, AP75 (and small/medium/large): pycocotools COCOeval, iouType 'segm',
  ``useCats = 0``, every query of every sample submitted as a scored prediction (upstream protocol).
  ``top1=True`` adds the same numbers with only each sample's top-scoring query (``top1_*``), the
  protocol question users raise: with all queries as predictions, low-scored queries can add recall.
- Overall IoU (sum I / sum U), mean IoU and P@0.5..0.9 (fraction with IoU > K, strict): for each
  ground-truth image (one instance each) the highest-scoring prediction, IoU = (I + 1e-6) / (U + 1e-6),
  so an empty prediction of an empty mask scores 1 (as MTTR/ReferFormer).

Evaluation itself (:func:`evaluate_referring_frames`) splits the samples across ranks without
padding (no duplicated predictions, spec 11.1 #8), gathers the predictions and scores them on rank 0;
every rank returns the same metrics. Nothing waits on a process group when there is none.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from tqdm import tqdm

from datasets.samplers import EvalDistributedSampler
from models.postprocessors import A2DSentencesPostProcess, encode_rle
from util.dist import all_gather_object, get_world_size, is_main_process
from util.misc import collate_fn, targets_to

logger = logging.getLogger(__name__)

PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
AP_NAMES = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")  # COCOeval stats[0:6]
IOU_EPS = 1e-6

Prediction = dict[str, Any]  # {image_id, category_id, segmentation (RLE), score}


# ---------------------------------------------------------------------------------------------- ground truth

def coco_gt_from_masks(records: Iterable[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """COCO ground truth with one instance per image from (image_id, binary mask [H, W]) pairs.

    Layout of MTTR's *_annotations_in_coco_format.json: category 1 'dummy_class', RLE segmentation with
    ascii counts, area = mask area, bbox xywh of the mask, iscrowd 0, annotation ids from 1.
    """
    from pycocotools import mask as mask_util

    images, annotations, seen = [], [], set()
    for image_id, mask in records:
        if image_id in seen:
            raise ValueError(f"image id {image_id!r} appears twice; each sample must have its own image id")
        seen.add(image_id)
        rle = encode_rle(mask)
        images.append({"id": image_id, "height": int(mask.shape[0]), "width": int(mask.shape[1])})
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "segmentation": rle,
                            "area": float(mask_util.area(rle)), "bbox": [float(v) for v in mask_util.toBbox(rle)],
                            "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "dummy_class"}]}


def read_coco_gt(path: Path) -> dict[str, Any]:
    """A COCO-format ground-truth JSON, checked for the fields the evaluation needs."""
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: missing field '{key}' (expected a COCO-format ground truth)")
    return data


def load_or_build_coco_gt(path: Path, records: Iterable[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """The COCO ground-truth file at `path` if it exists, else one built from (image_id, mask) records."""
    if path.is_file():
        return read_coco_gt(path)
    logger.info("%s not found; building the COCO ground truth from the dataset's masks", path)
    return coco_gt_from_masks(records)


def _coco(data: dict[str, Any]) -> Any:
    """pycocotools COCO object from a dict, without its console chatter."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# ---------------------------------------------------------------------------------------------- metrics

def top_predictions(predictions: list[Prediction]) -> dict[Any, Prediction]:
    """The highest-scoring prediction per image id (ties: the later one, as upstream's sort()[-1])."""
    best: dict[Any, Prediction] = {}
    for pred in predictions:
        current = best.get(pred["image_id"])
        if current is None or pred["score"] >= current["score"]:
            best[pred["image_id"]] = pred
    return best


def coco_ap(coco_gt: Any, predictions: list[Prediction], iou_type: str = "segm") -> dict[str, float]:
    """COCOeval ('segm' masks or 'bbox' xywh boxes) with useCats 0: mAP@[.5:.95], AP50, AP75, AP S/M/L."""
    from pycocotools.cocoeval import COCOeval

    if not predictions:
        raise ValueError("no predictions to evaluate")
    with contextlib.redirect_stdout(io.StringIO()) as log:
        coco_pred = coco_gt.loadRes([dict(p) for p in predictions])
        coco_eval = COCOeval(coco_gt, coco_pred, iouType=iou_type)
        coco_eval.params.useCats = 0
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.debug("COCOeval:\n%s", log.getvalue())
    return {name: float(v) for name, v in zip(AP_NAMES, coco_eval.stats[:6])}


def precision_and_iou(coco_gt: Any, predictions: list[Prediction]) -> dict[str, float]:
    """P@K, overall IoU and mean IoU of the top-scoring prediction of each ground-truth image."""
    from pycocotools import mask as mask_util

    best = top_predictions(predictions)
    hits = {k: 0 for k in PRECISION_THRESHOLDS}
    total_i = total_u = 0.0
    ious = []
    missing = 0
    for image_id in coco_gt.getImgIds():
        gt = coco_gt.annToMask(coco_gt.imgToAnns[image_id][0]).astype(bool)
        pred = best.get(image_id)
        if pred is None:
            missing += 1
            pred_mask = np.zeros_like(gt)
        else:
            pred_mask = mask_util.decode(pred["segmentation"]).astype(bool)
        inter, union = float(np.logical_and(pred_mask, gt).sum()), float(np.logical_or(pred_mask, gt).sum())
        iou = (inter + IOU_EPS) / (union + IOU_EPS)
        for k in PRECISION_THRESHOLDS:
            hits[k] += iou > k
        total_i += inter
        total_u += union
        ious.append(iou)
    if missing:
        logger.warning("%d of %d ground-truth images have no prediction (counted as empty masks)", missing, len(ious))
    n = max(len(ious), 1)
    metrics = {f"P@{k}": hits[k] / n for k in PRECISION_THRESHOLDS}
    metrics["overall_iou"] = total_i / total_u if total_u > 0 else 1.0
    metrics["mean_iou"] = float(np.mean(ious)) if ious else float("nan")
    return metrics


def referring_metrics(gt: dict[str, Any], predictions: list[Prediction], top1: bool = False) -> dict[str, float]:
    """All A2D/JHMDB numbers for predictions against a COCO-format ground-truth dict."""
    coco_gt = _coco(gt)
    unknown = {p["image_id"] for p in predictions} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"{len(unknown)} predicted image ids are not in the ground truth, e.g. {sorted(unknown)[:3]}")
    metrics = coco_ap(coco_gt, predictions)
    if top1:
        top = coco_ap(coco_gt, list(top_predictions(predictions).values()))
        metrics.update({f"top1_{name}": value for name, value in top.items()})
    metrics.update(precision_and_iou(coco_gt, predictions))
    metrics["n"] = len(coco_gt.getImgIds())
    return metrics


# ---------------------------------------------------------------------------------------------- model loop

def _eval_loader(dataset: Dataset, args: Any) -> DataLoader:
    sampler = EvalDistributedSampler(dataset) if get_world_size() > 1 else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, collate_fn=collate_fn,
                      num_workers=args.num_workers, pin_memory=torch.cuda.is_available())


@torch.no_grad()
def predict_referring_frames(model: nn.Module, postprocess: nn.Module, dataset: Dataset, args: Any,
                             device: torch.device) -> list[Prediction]:
    """This rank's predictions: every query of every annotated frame as {image_id, category_id, segmentation, score}."""
    model.eval()
    predictions: list[Prediction] = []
    loader = _eval_loader(dataset, args)
    for samples, targets in tqdm(loader, desc="eval", disable=not is_main_process(), dynamic_ncols=True, leave=False):
        captions = [t["caption"] for t in targets]
        image_ids = [t["image_id"] for t in targets]
        targets = targets_to(targets, device)
        outputs = model(samples.to(device), captions, targets)
        results = postprocess(outputs, [t["orig_size"].tolist() for t in targets], [t["size"].tolist() for t in targets])
        for image_id, result in zip(image_ids, results):
            predictions.extend({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(score)}
                               for score, rle in zip(result["scores"], result["rle_masks"]))
    return predictions


def evaluate_referring_frames(model: nn.Module, postprocessors: dict[str, nn.Module], dataset: Dataset,
                              load_gt: Any, args: Any, device: torch.device) -> dict[str, Any]:
    """Predict on `dataset` (split across ranks), gather, and score against ``load_gt()`` on rank 0.

    ``load_gt`` is a callable returning the COCO-format ground-truth dict (called on rank 0 only).
    """
    postprocess = postprocessors.get("a2d") or A2DSentencesPostProcess(args.threshold)
    mine = predict_referring_frames(model, postprocess, dataset, args, device)
    predictions = [p for part in all_gather_object(mine) for p in part]
    metrics: Optional[dict[str, Any]] = None
    if is_main_process():
        metrics = referring_metrics(load_gt(), predictions, top1=getattr(args, "a2d_top1_map", False))
        logger.info("%s", ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return all_gather_object(metrics)[0]
