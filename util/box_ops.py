"""Box conversions, IoU and generalised IoU (GIoU) as ReferFormer's matcher and criterion use them.

IoU and GIoU add 1e-6 to numerator and denominator (iou = (inter + 1e-6) / (union + 1e-6),
giou = iou - (area_c - union + 1e-6) / (area_c + 1e-6)), as the reference code does: this keeps the
value finite for the all-zero target boxes of frames where the referred object is absent (two zero
boxes have IoU 1 and GIoU 0).
"""
from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-6


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2) over the last axis."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h) over the last axis."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes [..., 4] -> [...]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _check_xyxy(boxes: Tensor, name: str) -> None:
    """Reject boxes with x2 < x1 or y2 < y1, whose (G)IoU would be meaningless (zero boxes pass)."""
    if not bool((boxes[..., 2:] >= boxes[..., :2]).all()):
        raise ValueError(f"{name}: expected xyxy boxes with x2 >= x1 and y2 >= y1")


def _intersection_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of xyxy boxes that broadcast against each other."""
    top_left = torch.max(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter, union


def _enclosing_area(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Area of the smallest box enclosing both (broadcasting) xyxy boxes."""
    top_left = torch.min(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _giou_from_broadcast(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    inter, union = _intersection_union(boxes1, boxes2)
    iou = (inter + _EPS) / (union + _EPS)
    area_c = _enclosing_area(boxes1, boxes2)
    return iou - (area_c - union + _EPS) / (area_c + _EPS)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU and union of xyxy boxes [N, 4] x [M, 4] -> ([N, M], [N, M])."""
    inter, union = _intersection_union(boxes1[:, None, :], boxes2[None, :, :])
    return (inter + _EPS) / (union + _EPS), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU of xyxy boxes [N, 4] x [M, 4] -> [N, M]; raises on inverted boxes."""
    _check_xyxy(boxes1, "generalized_box_iou boxes1")
    _check_xyxy(boxes2, "generalized_box_iou boxes2")
    return _giou_from_broadcast(boxes1[:, None, :], boxes2[None, :, :])


def generalized_box_iou_paired(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of corresponding xyxy boxes: [..., 4] x [..., 4] (broadcasting) -> [...].

    Equals the diagonal of generalized_box_iou for [N, 4] inputs without building the [N, N] matrix.
    It does not check the box orientation: that check would cost a host-device sync in the loss path,
    and boxes converted from cxcywh with non-negative w, h (sigmoid outputs, dataset targets) always pass.
    """
    return _giou_from_broadcast(boxes1, boxes2)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes (inclusive pixel indices) around binary masks [N, H, W] -> [N, 4].

    Empty masks give the all-zero box.
    """
    if masks.numel() == 0:
        return torch.zeros((0, 4), device=masks.device)
    present = masks.bool()
    rows = present.any(dim=2)
    cols = present.any(dim=1)
    height, width = masks.shape[-2:]
    y_index = torch.arange(height, device=masks.device, dtype=torch.float)
    x_index = torch.arange(width, device=masks.device, dtype=torch.float)
    big = float(max(height, width))
    x_min = torch.where(cols, x_index, big).min(dim=1).values
    x_max = torch.where(cols, x_index, -1.0).max(dim=1).values
    y_min = torch.where(rows, y_index, big).min(dim=1).values
    y_max = torch.where(rows, y_index, -1.0).max(dim=1).values
    boxes = torch.stack([x_min, y_min, x_max, y_max], dim=1)
    return torch.where(present.flatten(1).any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))
