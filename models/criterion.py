"""ReferFormer's training losses (``SetCriterion``): focal class, L1 + GIoU box, focal + dice mask.

One referred object per clip: the matcher picks one query slot per clip and the losses supervise that
slot on every frame. Every loss is divided by num_boxes, the number of valid frames in the batch
(averaged over ranks, at least 1). Behaviour kept from the reference code for checkpoint-faithful
training, although questionable (spec 11.1 items 1 and 2):
  * the box losses count frames where the object is absent, pulling the box towards (0, 0, 0, 0);
  * the mask losses are one value per clip (mean focal over T·h·w, dice over the clip volume), yet are
    divided by the number of valid frames, so they weigh about T times less than their weights suggest.
The forward returns unweighted losses; ``weight_dict`` holds the weight of every key.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou_paired
from util.dist import get_world_size, is_dist_avail_and_initialized

from .matcher import (
    MASK_FOCAL_ALPHA,
    MASK_FOCAL_GAMMA,
    ClipTargets,
    VideoQueryMatcher,
    build_matcher,
    dice_coefficient,
    prepare_clip_targets,
    sigmoid_focal_terms,
)

LossFn = Callable[[Mapping[str, Any], ClipTargets, Tensor, Tensor], dict[str, Tensor]]


def take_matched_query(pred: Tensor, src: Tensor) -> Tensor:
    """pred [B, T, Q, ...] and the matched slot per clip src Long[B] -> [B, T, ...].

    A gather (backward: scatter-add) rather than advanced indexing, whose CUDA backward may sync.
    """
    trailing = pred.shape[3:]
    index = src.view(-1, 1, 1, *(1 for _ in trailing)).expand(*pred.shape[:2], 1, *trailing)
    return pred.gather(2, index).squeeze(2)


def num_valid_frames(valid: Tensor, device: torch.device) -> Tensor:
    """Valid frames in the batch, averaged over ranks when distributed, clamped >= 1 (a 0-dim tensor).

    Kept on the device: no host sync (the all_reduce is the only collective).
    """
    count = valid.sum().to(device=device, dtype=torch.float)
    if is_dist_avail_and_initialized():
        dist.all_reduce(count)
        count = count / get_world_size()
    return count.clamp(min=1)


class SetCriterion(nn.Module):
    """Losses of one forward pass: the final decoder layer and, suffixed _0, _1, ..., every aux layer.

    losses selects the groups: 'labels' -> loss_ce, 'boxes' -> loss_bbox + loss_giou,
    'masks' -> loss_mask + loss_dice. Subclasses add a group by extending LOSS_METHODS.
    focal_alpha is the α of the class focal loss; the mask focal loss keeps the reference's fixed 0.25.
    """

    LOSS_METHODS: dict[str, str] = {"labels": "loss_labels", "boxes": "loss_boxes", "masks": "loss_masks"}

    def __init__(
        self,
        num_classes: int,
        matcher: VideoQueryMatcher,
        weight_dict: dict[str, float],
        losses: Iterable[str] = ("labels", "boxes", "masks"),
        focal_alpha: float = 0.25,
        mask_out_stride: int = 4,
    ) -> None:
        super().__init__()
        self.losses = tuple(losses)
        unknown = [name for name in self.losses if name not in self.LOSS_METHODS]
        if unknown:
            raise ValueError(
                f"SetCriterion: unknown losses {unknown}; expected some of {list(self.LOSS_METHODS)}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.focal_alpha = focal_alpha
        self.mask_out_stride = mask_out_stride

    def loss_labels(
        self, outputs: Mapping[str, Any], gt: ClipTargets, src: Tensor, num_boxes: Tensor
    ) -> dict[str, Tensor]:
        """Sigmoid focal loss over all B·T·Q·K logits / num_boxes.

        The one-hot target is 1 only at the matched slot on valid frames (class 0 when binary, else the
        frame label); other slots, and the matched slot on absent frames, are background.
        """
        logits = outputs["pred_logits"]  # [B, T, Q, K]
        num_queries, num_logits = logits.shape[2], logits.shape[3]
        matched = src[:, None] == torch.arange(num_queries, device=logits.device)  # [B, Q]
        frame_class = gt.class_indices(self.num_classes)[..., None]  # [B, T, 1]
        classes = frame_class == torch.arange(num_logits, device=logits.device)  # [B, T, K]
        target = matched[:, None, :, None] & gt.valid[:, :, None, None] & classes[:, :, None, :]
        focal = sigmoid_focal_terms(logits, target.to(logits.dtype), self.focal_alpha, gamma=2.0)
        return {"loss_ce": focal.sum() / num_boxes}

    def loss_boxes(
        self, outputs: Mapping[str, Any], gt: ClipTargets, src: Tensor, num_boxes: Tensor
    ) -> dict[str, Tensor]:
        """L1 and (1 − GIoU) of the matched slot's boxes on ALL frames (absent ones too), / num_boxes."""
        boxes = take_matched_query(outputs["pred_boxes"], src)  # [B, T, 4]
        giou = generalized_box_iou_paired(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt.boxes))
        return {
            "loss_bbox": (boxes - gt.boxes).abs().sum() / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
        }

    def loss_masks(
        self, outputs: Mapping[str, Any], gt: ClipTargets, src: Tensor, num_boxes: Tensor
    ) -> dict[str, Tensor]:
        """Per clip: mask focal mean over T·h·w and 1 − dice over the clip volume; summed, / num_boxes."""
        if "pred_masks" not in outputs or gt.masks is None:
            raise KeyError("loss 'masks' needs outputs['pred_masks'] and 'masks' in every target")
        masks = take_matched_query(outputs["pred_masks"], src).flatten(1)  # [B, T*h*w]
        target = gt.masks.flatten(1)
        focal = sigmoid_focal_terms(masks, target, MASK_FOCAL_ALPHA, MASK_FOCAL_GAMMA).mean(1)
        return {
            "loss_mask": focal.sum() / num_boxes,
            "loss_dice": (1 - dice_coefficient(masks, target)).sum() / num_boxes,
        }

    def layer_losses(
        self, outputs: Mapping[str, Any], gt: ClipTargets, num_boxes: Tensor
    ) -> dict[str, Tensor]:
        """Match, then compute every requested loss for one decoder layer's outputs."""
        src = self.matcher.select_queries(outputs, gt)
        losses: dict[str, Tensor] = {}
        for name in self.losses:
            loss_fn: LossFn = getattr(self, self.LOSS_METHODS[name])
            losses.update(loss_fn(outputs, gt, src, num_boxes))
        return losses

    def forward(self, outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Unweighted losses of the final layer plus, suffixed _i, those of outputs['aux_outputs'][i].

        The targets are stacked and their masks put on the prediction grid once, then shared by the
        matcher and the losses of every layer.
        """
        gt = prepare_clip_targets(outputs, targets, self.mask_out_stride)
        num_boxes = num_valid_frames(gt.valid, outputs["pred_boxes"].device)
        losses = self.layer_losses(outputs, gt, num_boxes)
        for i, aux_outputs in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self.layer_losses(aux_outputs, gt, num_boxes)
            losses.update({f"{key}_{i}": value for key, value in aux_losses.items()})
        return losses


def build_weight_dict(args: Any) -> dict[str, float]:
    """Loss weights from the --*_loss_coef flags, repeated for the dec_layers − 1 aux layers."""
    weights = {
        "loss_ce": args.cls_loss_coef, "loss_bbox": args.bbox_loss_coef, "loss_giou": args.giou_loss_coef,
    }
    if args.masks:
        weights.update(loss_mask=args.mask_loss_coef, loss_dice=args.dice_loss_coef)
    if args.aux_loss:
        base = dict(weights)
        for i in range(args.dec_layers - 1):
            weights.update({f"{key}_{i}": value for key, value in base.items()})
    return weights


def build_criterion(args: Any, num_classes: int) -> SetCriterion:
    """SetCriterion (with its matcher) from the loss and matcher flags; --masks adds the mask losses."""
    losses = ("labels", "boxes", "masks") if args.masks else ("labels", "boxes")
    return SetCriterion(
        num_classes=num_classes,
        matcher=build_matcher(args, num_classes),
        weight_dict=build_weight_dict(args),
        losses=losses,
        focal_alpha=args.focal_alpha,
    )
