"""models/criterion.py: every loss against arithmetic done by hand, normalisation, aux losses, gradients.

The hand clip: T = 2 frames (frame 1 has no object), Q = 2 query slots, K = 1 class, 32 x 32 masks
(padded grid 8 x 8 at stride 4). The matcher weighs only the L1 cost, so slot 1 (L1 0.35 vs 0.7) is
matched and the losses below are those of slot 1.
"""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from models.criterion import SetCriterion, build_criterion, num_valid_frames
from models.matcher import VideoQueryMatcher

EPS = 1e-6
LOSS_KEYS = {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"}


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def focal(x: float, t: int, alpha: float = 0.25) -> float:
    """Sigmoid focal loss of one logit x with target t (gamma 2)."""
    p_t = sigmoid(x) if t else 1 - sigmoid(x)
    return (alpha if t else 1 - alpha) * -math.log(p_t) * (1 - p_t) ** 2


# Hand values of slot 1 on the hand clip (frame 0 valid, frame 1 not).
# L1: frame 0 |0.6 - 0.5| = 0.1; frame 1 vs the zero box 0.1 + 0.1 + 0.2 + 0.2 = 0.6.
L1_SLOT1 = 0.1 + 0.6
# GIoU frame 0: (0.5, 0.4, 0.7, 0.6) vs (0.4, 0.4, 0.6, 0.6): inter 0.02, union 0.06, enclosing 0.06.
# GIoU frame 1: (0, 0, 0.2, 0.2) vs the zero box: inter 0, union 0.04, enclosing 0.04.
GIOU_LOSS_SLOT1 = (1 - ((0.02 + EPS) / (0.06 + EPS) - EPS / (0.06 + EPS))) + (
    1 - (EPS / (0.04 + EPS) - EPS / (0.04 + EPS)))
# Masks: slot 1 predicts logit -1 everywhere; the GT has 4 positive grid pixels (frame 0, the 2 x 2
# top-left block of the grid) out of 2 x 8 x 8 = 128.
MASK_FOCAL_SLOT1 = (4 * focal(-1.0, 1) + 124 * focal(-1.0, 0)) / 128
P = sigmoid(-1.0)
DICE_LOSS_SLOT1 = 1 - (2 * 4 * P + 1) / (128 * P + 4 + 1)


def hand_outputs() -> dict:
    logits = torch.tensor([[1.0, 0.0], [2.0, -1.0]]).view(1, 2, 2, 1)  # [t][q]
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]],
                          [[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2]]]).view(1, 2, 2, 4)
    masks = torch.empty(1, 2, 2, 8, 8)
    masks[:, :, 0] = 0.5
    masks[:, :, 1] = -1.0
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}


def hand_target(valid=(1, 0)) -> dict:
    masks = torch.zeros(2, 32, 32)
    masks[0, 1:8, 1:8] = 1  # sampled pixels (2|6, 2|6) -> grid (0|1, 0|1); offset 0 would see only (4, 4)
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]])
    return {"labels": torch.zeros(2, dtype=torch.long), "boxes": boxes, "masks": masks,
            "valid": torch.tensor(valid), "size": torch.tensor([32, 32])}


def l1_matched_criterion(**kwargs) -> SetCriterion:
    matcher = VideoQueryMatcher(cost_class=0, cost_bbox=1, cost_giou=0, cost_mask=0, cost_dice=0)
    return SetCriterion(num_classes=1, matcher=matcher, weight_dict={}, **kwargs)


def expected_hand_losses(alpha: float = 0.25) -> dict:
    # Class: positive only at (frame 0, slot 1) (logit 0); slot 0 and the invalid frame are background.
    ce = focal(0.0, 1, alpha) + focal(1.0, 0, alpha) + focal(2.0, 0, alpha) + focal(-1.0, 0, alpha)
    return {"loss_ce": ce, "loss_bbox": L1_SLOT1, "loss_giou": GIOU_LOSS_SLOT1,
            "loss_mask": MASK_FOCAL_SLOT1, "loss_dice": DICE_LOSS_SLOT1}


def assert_losses(losses: dict, expected: dict) -> None:
    assert set(losses) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], torch.tensor(value), msg=key)


def test_every_loss_by_hand_with_one_valid_frame():
    # num_boxes = 1 valid frame.
    assert_losses(l1_matched_criterion()(hand_outputs(), [hand_target()]), expected_hand_losses())


def test_focal_alpha_changes_the_class_loss_only():
    losses = l1_matched_criterion(focal_alpha=0.5)(hand_outputs(), [hand_target()])
    expected = expected_hand_losses()
    expected["loss_ce"] = expected_hand_losses(alpha=0.5)["loss_ce"]  # mask focal keeps α = 0.25
    assert_losses(losses, expected)


def test_losses_are_divided_by_the_number_of_valid_frames_in_the_batch():
    outputs = {key: torch.cat([value, value]) for key, value in hand_outputs().items()}
    losses = l1_matched_criterion()(outputs, [hand_target(), hand_target(valid=(1, 1))])
    one = expected_hand_losses()
    # 1 + 2 = 3 valid frames. Clip 2 differs only in the class target: slot 1 on frame 1 is positive.
    ce_clip2 = one["loss_ce"] - focal(-1.0, 0) + focal(-1.0, 1)
    expected = {key: 2 * value / 3 for key, value in one.items()}
    expected["loss_ce"] = (one["loss_ce"] + ce_clip2) / 3
    assert_losses(losses, expected)


def test_no_valid_frame_clamps_num_boxes_to_one():
    losses = l1_matched_criterion()(hand_outputs(), [hand_target(valid=(0, 0))])
    # Nothing positive in the class target; the other losses are unchanged (divided by 1).
    expected = expected_hand_losses()
    expected["loss_ce"] = focal(1.0, 0) + focal(0.0, 0) + focal(2.0, 0) + focal(-1.0, 0)
    assert_losses(losses, expected)


def test_class_loss_uses_the_frame_label_when_not_binary():
    outputs = hand_outputs()
    logits = torch.zeros(1, 2, 2, 3)
    logits[..., 2] = outputs["pred_logits"][..., 0]
    outputs["pred_logits"] = logits
    target = hand_target()
    target["labels"] = torch.tensor([2, 2])
    matcher = VideoQueryMatcher(cost_class=0, cost_bbox=1, cost_giou=0, cost_mask=0, cost_dice=0, num_classes=3)
    losses = SetCriterion(num_classes=3, matcher=matcher, weight_dict={}, losses=("labels",))(outputs, [target])
    # Column 2 as in the binary case; columns 0 and 1 are 8 background logits 0.
    expected_ce = expected_hand_losses()["loss_ce"] + 8 * focal(0.0, 0)
    assert_losses(losses, {"loss_ce": expected_ce})


def test_aux_outputs_are_matched_on_their_own_and_suffixed():
    outputs = hand_outputs()
    swapped = {key: value.flip(2) for key, value in hand_outputs().items()}  # slots in reverse order
    boxes_only = {key: value.clone() for key, value in hand_outputs().items()}
    boxes_only["pred_boxes"][0, :, 1] = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]])
    outputs["aux_outputs"] = [swapped, boxes_only]
    losses = l1_matched_criterion()(outputs, [hand_target()])
    expected = expected_hand_losses()
    # Layer 0: the same predictions with the slots reversed; its own matching picks slot 0 -> same losses.
    expected.update({f"{key}_0": value for key, value in expected_hand_losses().items()})
    # Layer 1: slot 1 predicts the target boxes exactly: L1 0; GIoU 1 - e/(0.04+e) on frame 0, 0 on frame 1.
    layer1 = expected_hand_losses()
    layer1.update(loss_bbox=0.0, loss_giou=EPS / (0.04 + EPS) + 1.0)
    expected.update({f"{key}_1": value for key, value in layer1.items()})
    assert_losses(losses, expected)


def test_loss_subset_and_unknown_loss():
    losses = l1_matched_criterion(losses=("labels", "boxes"))(hand_outputs(), [hand_target()])
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}
    with pytest.raises(ValueError, match="unknown losses"):
        l1_matched_criterion(losses=("labels", "cardinality"))


def test_valid_indices_clips_have_one_frame():
    """A2D/JHMDB: the model keeps only the annotated frame, so outputs and targets have T = 1."""
    outputs = {key: value[:, :1] for key, value in hand_outputs().items()}
    target = {key: value[:1] for key, value in hand_target().items() if key != "size"}
    target["valid_indices"] = torch.tensor([3])
    losses = l1_matched_criterion()(outputs, [target])
    # Frame 0 only: slot 0 has the exact box (L1 0 vs 0.1) and is matched; num_boxes 1.
    torch.testing.assert_close(losses["loss_bbox"], torch.tensor(0.0))
    torch.testing.assert_close(losses["loss_ce"], torch.tensor(focal(1.0, 1) + focal(0.0, 0)))
    # Slot 0 predicts logit 0.5 everywhere; 4 positives out of 8 x 8 = 64 grid pixels.
    torch.testing.assert_close(losses["loss_mask"], torch.tensor((4 * focal(0.5, 1) + 60 * focal(0.5, 0)) / 64))
    with pytest.raises(ValueError, match="valid_indices"):
        l1_matched_criterion()(outputs, [dict(hand_target(), valid_indices=torch.tensor([0]))])


def default_args(**overrides) -> SimpleNamespace:
    args = dict(cls_loss_coef=2, bbox_loss_coef=5, giou_loss_coef=2, mask_loss_coef=2, dice_loss_coef=5,
                focal_alpha=0.25, aux_loss=True, dec_layers=4, masks=True, binary=True, set_cost_class=2,
                set_cost_bbox=5, set_cost_giou=2, set_cost_mask=2, set_cost_dice=5)
    args.update(overrides)
    return SimpleNamespace(**args)


def test_build_criterion_weight_dict_covers_every_returned_key():
    criterion = build_criterion(default_args(), num_classes=1)
    base = {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 2, "loss_dice": 5}
    expected = dict(base)
    for i in range(3):
        expected.update({f"{key}_{i}": value for key, value in base.items()})
    assert criterion.weight_dict == expected and len(expected) == 20
    outputs = hand_outputs()
    outputs["aux_outputs"] = [hand_outputs() for _ in range(3)]
    assert set(criterion(outputs, [hand_target()])) == set(expected)
    assert set(build_criterion(default_args(aux_loss=False, masks=False), 1).weight_dict) == {
        "loss_ce", "loss_bbox", "loss_giou"}
    assert build_criterion(default_args(masks=False), 1).losses == ("labels", "boxes")


def test_gradients_reach_the_matched_slot_and_all_logits():
    outputs = {key: value.clone().requires_grad_() for key, value in hand_outputs().items()}
    aux = {key: value.clone().requires_grad_() for key, value in hand_outputs().items()}
    criterion = build_criterion(default_args(dec_layers=2), num_classes=1)
    criterion.matcher = l1_matched_criterion().matcher
    losses = criterion(dict(outputs, aux_outputs=[aux]), [hand_target()])
    total = sum(criterion.weight_dict[key] * value for key, value in losses.items())
    total.backward()
    for preds in (outputs, aux):
        assert (preds["pred_logits"].grad != 0).all()
        for key in ("pred_boxes", "pred_masks"):
            grad = preds[key].grad
            assert grad[:, :, 1].abs().sum() > 0, key
            assert (grad[:, :, 0] == 0).all(), f"{key}: the unmatched slot must get no gradient"


def test_num_valid_frames_all_reduces_under_torch_distributed(tmp_path):
    valid = torch.tensor([[1, 0, 1], [1, 1, 1]])
    assert num_valid_frames(valid, torch.device("cpu")) == 5
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        count = num_valid_frames(valid, torch.device("cpu"))
        assert count.dim() == 0 and count.item() == 5
        assert num_valid_frames(torch.zeros(2, 3), torch.device("cpu")).item() == 1
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loss_path_has_no_host_sync_on_cuda():
    cuda = torch.device("cuda")
    outputs = {key: value.to(cuda).requires_grad_() for key, value in hand_outputs().items()}
    outputs["aux_outputs"] = [{key: value.detach().clone().requires_grad_() for key, value in outputs.items()}]
    targets = [{key: value.to(cuda) for key, value in hand_target().items()}]
    criterion = l1_matched_criterion()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = criterion(outputs, targets)
        sum(losses.values()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert_losses({key: value.cpu() for key, value in losses.items() if key in LOSS_KEYS}, expected_hand_losses())
