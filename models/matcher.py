"""Query matching for referring video segmentation: one arg-min query per clip.

ReferFormer's reference code calls its matcher ``HungarianMatcher``, but with exactly one referred
object per clip there is nothing to assign: it takes, per clip, the query slot with the lowest total
cost (the same slot for every frame). ``VideoQueryMatcher`` is that arg-min, vectorised over the batch.

This module also holds what the matcher and the criterion (models/criterion.py) share: the focal and
dice terms, and ``ClipTargets``, the batch of targets stacked once per criterion call with the
ground-truth masks already brought to the prediction grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou_paired

SIZE_DIVISIBILITY = 32
# The reference code hard-codes α = 0.25, γ = 2 for the mask focal term (matcher cost and loss alike).
MASK_FOCAL_ALPHA = 0.25
MASK_FOCAL_GAMMA = 2.0


def sigmoid_focal_terms(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss (RetinaNet), not reduced; alpha < 0 disables the α weighting."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def dice_coefficient(logits: Tensor, targets: Tensor) -> Tensor:
    """Smoothed dice (2·Σpt + 1) / (Σp + Σt + 1) over the last axis, p = sigmoid(logits).

    Inputs broadcast against each other, so [B, Q, N] logits against [B, 1, N] targets give [B, Q].
    """
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (numerator + 1) / (denominator + 1)


@dataclass
class ClipTargets:
    """The per-clip target dicts of one batch, stacked (every clip of a batch has the same T).

    labels: Long[B, T] or None when the targets carry no labels; boxes: [B, T, 4] normalised cxcywh,
    zero on frames without the object; valid: Bool[B, T]; masks: [B, T, h, w] on the prediction grid
    (see ``masks_on_prediction_grid``) or None when there are no predicted or target masks.
    """

    labels: Tensor | None
    boxes: Tensor
    valid: Tensor
    masks: Tensor | None

    def class_indices(self, num_classes: int) -> Tensor:
        """Long[B, T] class each frame is supervised with: 0 when num_classes == 1, else the frame label."""
        if num_classes == 1:
            return torch.zeros_like(self.valid, dtype=torch.long)
        if self.labels is None:
            raise ValueError(f"targets need 'labels' when num_classes = {num_classes} > 1")
        # Invalid frames never use their label; zero keeps them a legal index for gather.
        return torch.where(self.valid, self.labels, torch.zeros_like(self.labels))


def masks_on_prediction_grid(masks: Sequence[Tensor], mask_out_stride: int = 4) -> Tensor:
    """Ground-truth masks [T, H_b, W_b] per clip -> [B, T, Hp / s, Wp / s] at the predictions' stride s.

    Equivalent to ReferFormer's: pad every clip to the batch max (H, W) rounded up to a multiple of 32
    (as the images are), then keep rows and columns s//2, s//2 + s, ... (2, 6, 10, ... for s = 4), without
    interpolation. Sub-sampling each clip before pasting it into the zero grid gives the same values
    without building the padded full-resolution copy.
    """
    if SIZE_DIVISIBILITY % mask_out_stride:
        raise ValueError(f"mask_out_stride {mask_out_stride} must divide {SIZE_DIVISIBILITY}")
    start = mask_out_stride // 2
    padded_h = _round_up(max(m.shape[-2] for m in masks), SIZE_DIVISIBILITY)
    padded_w = _round_up(max(m.shape[-1] for m in masks), SIZE_DIVISIBILITY)
    first = masks[0]
    grid = first.new_zeros(
        (len(masks), first.shape[0], padded_h // mask_out_stride, padded_w // mask_out_stride)
    )
    for b, clip_masks in enumerate(masks):
        sampled = clip_masks[:, start::mask_out_stride, start::mask_out_stride]
        grid[b, :, : sampled.shape[1], : sampled.shape[2]] = sampled
    return grid


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_target_lengths(targets: Sequence[Mapping[str, Tensor]], num_frames: int) -> None:
    for b, target in enumerate(targets):
        for key in ("labels", "boxes", "masks", "valid"):
            if key in target and target[key].shape[0] != num_frames:
                hint = " (with valid_indices the targets must hold only the selected frame)" if (
                    "valid_indices" in target) else ""
                raise ValueError(
                    f"targets[{b}]['{key}'] has {target[key].shape[0]} frames, outputs have "
                    f"T = {num_frames}{hint}"
                )


def prepare_clip_targets(
    outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]], mask_out_stride: int = 4
) -> ClipTargets:
    """Stack the target dicts and put the GT masks on the grid of ``outputs['pred_masks']``.

    Done once per criterion call and shared by the matcher and the losses of every decoder layer.
    Targets without 'masks', or outputs without 'pred_masks', give ``masks=None``.
    """
    num_frames = outputs["pred_boxes"].shape[1]
    _check_target_lengths(targets, num_frames)
    device = outputs["pred_boxes"].device
    labels = None
    if all("labels" in t for t in targets):
        labels = torch.stack([t["labels"] for t in targets]).to(device=device, dtype=torch.long)
    boxes = torch.stack([t["boxes"] for t in targets]).to(outputs["pred_boxes"])
    valid = torch.stack([t["valid"] for t in targets]).to(device=device).bool()
    masks = None
    pred_masks = outputs.get("pred_masks")
    if pred_masks is not None and all("masks" in t for t in targets):
        masks = masks_on_prediction_grid([t["masks"] for t in targets], mask_out_stride).to(pred_masks)
        if masks.shape[-2:] != pred_masks.shape[-2:]:
            raise ValueError(
                f"ground-truth masks on the stride-{mask_out_stride} grid are {tuple(masks.shape[-2:])} "
                f"but pred_masks are {tuple(pred_masks.shape[-2:])}: the images must be padded to a "
                f"multiple of {SIZE_DIVISIBILITY} and the masks predicted at stride {mask_out_stride}"
            )
    return ClipTargets(labels=labels, boxes=boxes, valid=valid, masks=masks)


def _class_cost(pred_logits: Tensor, gt: ClipTargets, num_classes: int, alpha: float, gamma: float) -> Tensor:
    """Focal-style class cost [B, Q] (pos − neg at the supervised class), averaged over valid frames.

    A clip without any valid frame gets cost 0 (the reference code would crash; datasets resample them).
    """
    prob = pred_logits.sigmoid()  # [B, T, Q, K]
    classes = gt.class_indices(num_classes)[:, :, None, None].expand(*prob.shape[:3], 1)
    prob = prob.gather(3, classes).squeeze(3)  # [B, T, Q]
    neg = (1 - alpha) * prob**gamma * -torch.log(1 - prob + 1e-8)
    pos = alpha * (1 - prob) ** gamma * -torch.log(prob + 1e-8)
    weight = gt.valid.to(prob.dtype)[:, :, None]  # [B, T, 1]
    return ((pos - neg) * weight).sum(1) / weight.sum(1).clamp(min=1)


def _box_costs(pred_boxes: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """L1 and −GIoU costs [B, Q], averaged over ALL frames.

    Known upstream quirk (kept for checkpoint-faithful training): frames where the object is absent
    count too, with their all-zero target box, unlike the class cost.
    """
    target = gt_boxes[:, :, None, :]  # [B, T, 1, 4]
    l1 = (pred_boxes - target).abs().sum(-1).mean(1)
    giou = generalized_box_iou_paired(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target))
    return l1, -giou.mean(1)


def _mask_costs(pred_masks: Tensor, gt_masks: Tensor) -> tuple[Tensor, Tensor]:
    """Mask focal cost (mean over the clip volume T·h·w) and −dice over the clip volume, both [B, Q]."""
    pred = pred_masks.transpose(1, 2).flatten(2)  # [B, Q, T*h*w]
    target = gt_masks.flatten(1)[:, None, :]  # [B, 1, T*h*w]
    focal = sigmoid_focal_terms(pred, target.expand_as(pred), MASK_FOCAL_ALPHA, MASK_FOCAL_GAMMA).mean(-1)
    return focal, -dice_coefficient(pred, target)


class VideoQueryMatcher(nn.Module):
    """Pick one query slot per clip: argmin over Q of the weighted sum of five costs.

    The reference code names this class ``HungarianMatcher``; it solves no assignment problem, it takes
    the arg-min (ties: the lowest index). Costs, each [B, Q]:
      class: focal-style pos − neg at class 0 (binary) or the frame label, mean over valid frames;
      bbox / giou: L1 and −GIoU of cxcywh boxes, mean over all frames (absent frames included);
      mask / dice: mask focal (mean over T·h·w) and −dice over the whole clip volume.
    α, γ of the class cost default to the reference's hard-coded 0.25 and 2.
    """

    def __init__(
        self,
        cost_class: float = 2,
        cost_bbox: float = 5,
        cost_giou: float = 2,
        cost_mask: float = 2,
        cost_dice: float = 5,
        num_classes: int = 1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mask_out_stride: int = 4,
    ) -> None:
        super().__init__()
        if not any((cost_class, cost_bbox, cost_giou, cost_mask, cost_dice)):
            raise ValueError("VideoQueryMatcher: all cost weights are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_classes = num_classes
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_out_stride = mask_out_stride

    @torch.no_grad()
    def cost_terms(self, outputs: Mapping[str, Any], gt: ClipTargets) -> dict[str, Tensor]:
        """The unweighted costs, each [B, Q]; mask costs only when both sides have masks."""
        pred_logits = outputs["pred_logits"].float()
        pred_boxes = outputs["pred_boxes"].float()
        terms = {"class": _class_cost(pred_logits, gt, self.num_classes, self.focal_alpha, self.focal_gamma)}
        terms["bbox"], terms["giou"] = _box_costs(pred_boxes, gt.boxes.float())
        uses_masks = bool(self.cost_mask or self.cost_dice)
        if uses_masks and gt.masks is not None and "pred_masks" in outputs:
            terms["mask"], terms["dice"] = _mask_costs(outputs["pred_masks"].float(), gt.masks.float())
        return terms

    @torch.no_grad()
    def select_queries(self, outputs: Mapping[str, Any], gt: ClipTargets) -> Tensor:
        """Long[B]: the matched query slot of every clip (used for all its frames)."""
        weights = {
            "class": self.cost_class, "bbox": self.cost_bbox, "giou": self.cost_giou,
            "mask": self.cost_mask, "dice": self.cost_dice,
        }
        terms = self.cost_terms(outputs, gt)
        total = sum(weights[name] * cost for name, cost in terms.items())
        return total.argmin(dim=1)

    @torch.no_grad()
    def forward(
        self,
        outputs: Mapping[str, Any],
        targets: Sequence[Mapping[str, Tensor]],
        gt: ClipTargets | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Per clip (Long[1] query index, Long[1] target index 0), as the reference matcher returns.

        ``gt`` is the ``prepare_clip_targets`` result when the caller already has it (the criterion).
        """
        if gt is None:
            gt = prepare_clip_targets(outputs, targets, self.mask_out_stride)
        src = self.select_queries(outputs, gt)
        tgt = torch.zeros(1, dtype=torch.long, device=src.device)
        return [(src[b : b + 1], tgt) for b in range(src.shape[0])]


def build_matcher(args: Any, num_classes: int | None = None) -> VideoQueryMatcher:
    """Matcher from the --set_cost_* flags; num_classes is 1 under --binary unless given explicitly."""
    if num_classes is None:
        if not getattr(args, "binary", False):
            raise ValueError("build_matcher: pass num_classes when --binary is not set")
        num_classes = 1
    return VideoQueryMatcher(
        cost_class=args.set_cost_class,
        cost_bbox=args.set_cost_bbox,
        cost_giou=args.set_cost_giou,
        cost_mask=args.set_cost_mask,
        cost_dice=args.set_cost_dice,
        num_classes=num_classes,
    )
