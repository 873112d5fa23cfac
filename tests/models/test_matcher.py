"""models/matcher.py: every cost against arithmetic done by hand, the arg-min, and the GT mask grid.

The hand case: one clip, T = 2 frames (frame 1 has no object), Q = 2 query slots, K = 1 class,
masks on a 2x2 grid.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from models.matcher import (
    ClipTargets,
    VideoQueryMatcher,
    build_matcher,
    masks_on_prediction_grid,
    prepare_clip_targets,
)

EPS = 1e-6


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def class_cost(p: float, alpha: float = 0.25) -> float:
    """pos - neg of the matcher's class cost for probability p (gamma 2, 1e-8 inside the logs)."""
    return alpha * (1 - p) ** 2 * -math.log(p + 1e-8) - (1 - alpha) * p**2 * -math.log(1 - p + 1e-8)


def focal(x: float, t: int, alpha: float = 0.25) -> float:
    """Sigmoid focal loss of one logit x with target t (gamma 2)."""
    p_t = sigmoid(x) if t else 1 - sigmoid(x)
    return (alpha if t else 1 - alpha) * -math.log(p_t) * (1 - p_t) ** 2


def hand_case(frame1_logits=(2.0, -1.0), frame1_boxes=((0.5, 0.5, 0.2, 0.2), (0.1, 0.1, 0.2, 0.2))):
    """outputs + ClipTargets of the hand case. logits[t][q]; boxes[t][q] cxcywh; masks [t][q] 2x2."""
    logits = torch.tensor([[1.0, 0.0], list(frame1_logits)]).view(1, 2, 2, 1)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]], list(frame1_boxes)]).view(1, 2, 2, 4)
    masks = torch.full((1, 2, 2, 2, 2), -2.0)
    masks[0, :, 0] = 0.0  # query 0: logit 0 everywhere
    masks[0, 0, 1, 0, 0] = 2.0  # query 1: logit 2 at frame 0 pixel (0, 0), -2 elsewhere
    gt = ClipTargets(
        labels=torch.zeros(1, 2, dtype=torch.long),
        boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]]),
        valid=torch.tensor([[True, False]]),
        masks=torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]]),
    )
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}, gt


def only(name: str, weight: float = 1.0) -> VideoQueryMatcher:
    """A matcher whose total cost is just one term."""
    weights = {"cost_class": 0, "cost_bbox": 0, "cost_giou": 0, "cost_mask": 0, "cost_dice": 0}
    weights[f"cost_{name}"] = weight
    return VideoQueryMatcher(**weights)


def test_class_cost_uses_valid_frames_only():
    outputs, gt = hand_case()
    # Frame 0 only (frame 1 is invalid): q0 logit 1 -> p = sigmoid(1); q1 logit 0 -> p = 0.5.
    expected = [class_cost(sigmoid(1.0)), class_cost(0.5)]
    cost = VideoQueryMatcher().cost_terms(outputs, gt)["class"]
    torch.testing.assert_close(cost, torch.tensor([expected]))
    # Whatever the logits of the invalid frame, the class cost does not move.
    outputs_changed, _ = hand_case(frame1_logits=(-5.0, 7.0))
    torch.testing.assert_close(VideoQueryMatcher().cost_terms(outputs_changed, gt)["class"], cost)


def test_class_cost_averages_over_several_valid_frames():
    outputs, gt = hand_case()
    gt.valid = torch.tensor([[True, True]])
    # q0: frames logits 1 and 2; q1: 0 and -1.
    expected = [(class_cost(sigmoid(1.0)) + class_cost(sigmoid(2.0))) / 2,
                (class_cost(0.5) + class_cost(sigmoid(-1.0))) / 2]
    torch.testing.assert_close(VideoQueryMatcher().cost_terms(outputs, gt)["class"], torch.tensor([expected]))


def test_class_cost_reads_the_frame_label_column_when_not_binary():
    # K = 3 classes, the object is class 2: column 2 holds logits 1 (q0) and -3 (q1) on the valid frame.
    outputs, gt = hand_case()
    logits = torch.zeros(1, 2, 2, 3)
    logits[0, 0, :, 2] = torch.tensor([1.0, -3.0])
    logits[0, 0, :, 0] = torch.tensor([-3.0, 1.0])  # a decoy in column 0
    outputs["pred_logits"] = logits
    gt.labels = torch.tensor([[2, 2]])
    cost = VideoQueryMatcher(num_classes=3).cost_terms(outputs, gt)["class"]
    torch.testing.assert_close(cost, torch.tensor([[class_cost(sigmoid(1.0)), class_cost(sigmoid(-3.0))]]))
    gt.labels = None
    with pytest.raises(ValueError, match="labels"):
        VideoQueryMatcher(num_classes=3).cost_terms(outputs, gt)


def test_class_cost_is_zero_without_valid_frames():
    outputs, gt = hand_case()
    gt.valid = torch.tensor([[False, False]])
    torch.testing.assert_close(VideoQueryMatcher().cost_terms(outputs, gt)["class"], torch.zeros(1, 2))


def test_l1_cost_averages_over_all_frames_including_invalid():
    outputs, gt = hand_case()
    # q0: frame 0 exact (0); frame 1 against the zero box: 0.5 + 0.5 + 0.2 + 0.2 = 1.4 -> mean 0.7.
    # q1: frame 0 |0.6 - 0.5| = 0.1; frame 1: 0.1 + 0.1 + 0.2 + 0.2 = 0.6 -> mean 0.35.
    torch.testing.assert_close(VideoQueryMatcher().cost_terms(outputs, gt)["bbox"], torch.tensor([[0.7, 0.35]]))


def test_giou_cost_by_hand():
    outputs, gt = hand_case()
    # Target frame 0: xyxy (0.4, 0.4, 0.6, 0.6), area 0.04; frame 1: the zero box.
    # q0 f0: the same box: iou 1, enclosing area 0.04 -> 1 - e/(0.04 + e).
    q0f0 = 1 - EPS / (0.04 + EPS)
    # q0 f1: (0.4, 0.4, 0.6, 0.6) vs zero box: inter 0, union 0.04, enclosing (0,0)-(0.6,0.6) = 0.36.
    q0f1 = EPS / (0.04 + EPS) - (0.36 - 0.04 + EPS) / (0.36 + EPS)
    # q1 f0: (0.5, 0.4, 0.7, 0.6): inter 0.1 x 0.2 = 0.02, union 0.06, enclosing 0.3 x 0.2 = 0.06.
    q1f0 = (0.02 + EPS) / (0.06 + EPS) - EPS / (0.06 + EPS)
    # q1 f1: (0, 0, 0.2, 0.2) vs zero box: inter 0, union 0.04, enclosing 0.04.
    q1f1 = EPS / (0.04 + EPS) - EPS / (0.04 + EPS)
    expected = torch.tensor([[-(q0f0 + q0f1) / 2, -(q1f0 + q1f1) / 2]])
    torch.testing.assert_close(VideoQueryMatcher().cost_terms(outputs, gt)["giou"], expected)


def test_box_costs_see_the_invalid_frame():
    outputs, gt = hand_case()
    moved, _ = hand_case(frame1_boxes=((0.3, 0.3, 0.1, 0.1), (0.1, 0.1, 0.2, 0.2)))
    before, after = VideoQueryMatcher().cost_terms(outputs, gt), VideoQueryMatcher().cost_terms(moved, gt)
    # q0's frame-1 box moved: L1 on frame 1 becomes 0.3 + 0.3 + 0.1 + 0.1 = 0.8 -> mean 0.4.
    torch.testing.assert_close(after["bbox"], torch.tensor([[0.4, 0.35]]))
    assert after["giou"][0, 0] != before["giou"][0, 0]


def test_mask_focal_cost_by_hand():
    outputs, gt = hand_case()
    # 8 pixels in the clip (2 frames x 2 x 2), one positive (frame 0, pixel (0, 0)).
    q0 = (focal(0.0, 1) + 7 * focal(0.0, 0)) / 8
    q1 = (focal(2.0, 1) + 7 * focal(-2.0, 0)) / 8
    torch.testing.assert_close(VideoQueryMatcher().cost_terms(outputs, gt)["mask"], torch.tensor([[q0, q1]]))


def test_dice_cost_by_hand():
    outputs, gt = hand_case()
    # q0: p = 0.5 everywhere: sum p = 4, sum t = 1, sum p*t = 0.5 -> (2*0.5 + 1) / (4 + 1 + 1) = 1/3.
    # q1: p = s(2) at the positive pixel, s(-2) = 1 - s(2) at the other 7.
    s2 = sigmoid(2.0)
    q1 = (2 * s2 + 1) / (s2 + 7 * (1 - s2) + 1 + 1)
    torch.testing.assert_close(VideoQueryMatcher().cost_terms(outputs, gt)["dice"], torch.tensor([[-1 / 3, -q1]]))


def test_each_term_alone_and_the_weighted_total_pick_the_argmin():
    outputs, gt = hand_case()
    # class: q0 has the higher probability on the valid frame -> q0; L1: 0.7 vs 0.35 -> q1.
    assert only("class").select_queries(outputs, gt).tolist() == [0]
    assert only("bbox").select_queries(outputs, gt).tolist() == [1]
    # Default weights 2, 5, 2, 2, 5 over the hand-computed terms.
    terms = VideoQueryMatcher().cost_terms(outputs, gt)
    totals = [2 * terms["class"][0, q] + 5 * terms["bbox"][0, q] + 2 * terms["giou"][0, q]
              + 2 * terms["mask"][0, q] + 5 * terms["dice"][0, q] for q in range(2)]
    assert min(range(2), key=totals.__getitem__) == 1
    assert VideoQueryMatcher().select_queries(outputs, gt).tolist() == [1]
    # A heavy class weight flips the choice back to q0.
    heavy = VideoQueryMatcher(cost_class=1000)
    assert heavy.select_queries(outputs, gt).tolist() == [0]


def test_ties_pick_the_lowest_index():
    outputs, gt = hand_case()
    outputs["pred_boxes"][0, :, 1] = outputs["pred_boxes"][0, :, 0]
    assert only("bbox").select_queries(outputs, gt).tolist() == [0]


def test_batched_costs_equal_per_clip_costs():
    """The vectorised matcher must not mix clips: B clips at once == each clip alone."""
    gen = torch.Generator().manual_seed(0)
    b, t, q, k = 3, 3, 4, 2
    outputs = {
        "pred_logits": torch.randn(b, t, q, k, generator=gen),
        "pred_boxes": torch.rand(b, t, q, 4, generator=gen),
        "pred_masks": torch.randn(b, t, q, 2, 3, generator=gen),
    }
    gt = ClipTargets(
        labels=torch.randint(0, k, (b, t), generator=gen),
        boxes=torch.rand(b, t, 4, generator=gen),
        valid=torch.tensor([[True, False, True], [True, True, True], [False, True, False]]),
        masks=(torch.rand(b, t, 2, 3, generator=gen) > 0.5).float(),
    )
    matcher = VideoQueryMatcher(num_classes=k)
    batched = matcher.cost_terms(outputs, gt)
    for i in range(b):
        clip_outputs = {key: value[i : i + 1] for key, value in outputs.items()}
        clip_gt = ClipTargets(gt.labels[i : i + 1], gt.boxes[i : i + 1], gt.valid[i : i + 1], gt.masks[i : i + 1])
        for name, cost in matcher.cost_terms(clip_outputs, clip_gt).items():
            torch.testing.assert_close(batched[name][i : i + 1], cost)


def test_gt_mask_grid_starts_at_2_with_stride_4_after_padding_to_32():
    first = torch.zeros(2, 40, 30)
    first[0, 2, 6] = 1  # sampled: grid row (2 - 2) / 4 = 0, col (6 - 2) / 4 = 1
    first[0, 3, 6] = 1  # row 3 is not sampled
    first[1, 38, 26] = 1  # sampled: grid (9, 6)
    second = torch.ones(2, 20, 50)
    grid = masks_on_prediction_grid([first, second], mask_out_stride=4)
    # Batch max 40 x 50 rounds up to 64 x 64 -> 16 x 16 at stride 4.
    assert grid.shape == (2, 2, 16, 16)
    assert grid[0].nonzero().tolist() == [[0, 0, 1], [1, 9, 6]]
    # Clip 2 is 20 x 50: rows 2..18 (5 rows) and cols 2..46 (12 cols) are inside it, the rest is padding.
    assert grid[1, :, :5, :12].eq(1).all() and grid[1].sum() == 2 * 5 * 12
    # The same as padding at full resolution to 64 x 64, then slicing [2::4, 2::4].
    padded = torch.stack([F.pad(m, (0, 64 - m.shape[2], 0, 64 - m.shape[1])) for m in (first, second)])
    torch.testing.assert_close(grid, padded[:, :, 2::4, 2::4])


def raw_targets(num_frames: int = 2, size: tuple[int, int] = (32, 32)):
    return [{
        "labels": torch.zeros(num_frames, dtype=torch.long),
        "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(num_frames, 1),
        "masks": torch.zeros(num_frames, *size),
        "valid": torch.ones(num_frames, dtype=torch.long),
        "size": torch.tensor(size),
    }]


def test_prepare_checks_the_grid_against_pred_masks_and_the_frame_count():
    outputs = {"pred_logits": torch.zeros(1, 2, 3, 1), "pred_boxes": torch.rand(1, 2, 3, 4),
               "pred_masks": torch.zeros(1, 2, 3, 8, 8)}
    targets = raw_targets(size=(30, 20))
    targets[0]["masks"] = targets[0]["masks"].bool()  # datasets may hand over bool or uint8 masks
    gt = prepare_clip_targets(outputs, targets)
    assert gt.masks.shape == (1, 2, 8, 8) and gt.masks.dtype == torch.float32 and gt.valid.dtype == torch.bool
    with pytest.raises(ValueError, match="pred_masks"):
        prepare_clip_targets(outputs, raw_targets(size=(40, 20)))  # pads to 64 -> 16 rows, not 8
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] has 3 frames"):
        prepare_clip_targets(outputs, raw_targets(num_frames=3))


def test_forward_returns_one_query_and_target_zero_per_clip():
    outputs = {"pred_logits": torch.zeros(2, 2, 3, 1), "pred_boxes": torch.full((2, 2, 3, 4), 0.3),
               "pred_masks": torch.zeros(2, 2, 3, 8, 8)}
    outputs["pred_boxes"][0, :, 2] = 0.5  # clip 0: slot 2 has the exact target box
    outputs["pred_boxes"][1, :, 1] = 0.5
    outputs["pred_boxes"][:, :, :, 2:] = 0.2
    indices = VideoQueryMatcher()(outputs, raw_targets() * 2)
    assert [(src.tolist(), tgt.tolist()) for src, tgt in indices] == [([2], [0]), ([1], [0])]
    assert all(src.dtype == torch.long and tgt.dtype == torch.long for src, tgt in indices)


def test_build_matcher_reads_the_cost_flags():
    from types import SimpleNamespace

    args = SimpleNamespace(set_cost_class=1, set_cost_bbox=2, set_cost_giou=3, set_cost_mask=4,
                           set_cost_dice=6, binary=True)
    matcher = build_matcher(args)
    assert (matcher.cost_class, matcher.cost_bbox, matcher.cost_giou, matcher.cost_mask, matcher.cost_dice,
            matcher.num_classes) == (1, 2, 3, 4, 6, 1)
    assert build_matcher(args, num_classes=65).num_classes == 65
    args.binary = False
    with pytest.raises(ValueError, match="num_classes"):
        build_matcher(args)
    with pytest.raises(ValueError, match="all cost weights"):
        VideoQueryMatcher(0, 0, 0, 0, 0)
