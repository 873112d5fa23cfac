"""util/box_ops.py against values worked out by hand."""
import pytest
import torch

from util.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    generalized_box_iou_paired,
    masks_to_boxes,
)

EPS = 1e-6


def test_cxcywh_xyxy_conversions():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.0, 0.0]])
    # x1 = cx - w/2 = 0.4, y1 = cy - h/2 = 0.3, x2 = 0.6, y2 = 0.7; a zero-size box stays a point.
    xyxy = torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.1, 0.9, 0.1, 0.9]])
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), xyxy)
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)
    # Works on any leading shape.
    assert box_cxcywh_to_xyxy(cxcywh.view(2, 1, 4)).shape == (2, 1, 4)


def test_box_area():
    torch.testing.assert_close(box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]])),
                               torch.tensor([6.0, 0.0]))


def test_box_iou_and_union_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    iou, union = box_iou(a, b)
    # vs b0: intersection 1x1 = 1, union 4 + 4 - 1 = 7. vs b1: disjoint, union 4 + 1 = 5.
    torch.testing.assert_close(union, torch.tensor([[7.0, 5.0]]))
    torch.testing.assert_close(iou, torch.tensor([[(1 + EPS) / (7 + EPS), EPS / (5 + EPS)]]))


def test_generalized_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    giou = generalized_box_iou(a, b)
    # a0-b0: iou (1+e)/(7+e); enclosing box (0,0)-(3,3) area 9: giou = iou - (9 - 7 + e)/(9 + e).
    a0b0 = (1 + EPS) / (7 + EPS) - (2 + EPS) / (9 + EPS)
    # a0 vs zero box: inter 0, union 4, enclosing (0,0)-(2,2) area 4: e/(4+e) - (0+e)/(4+e) = 0.
    a0b1 = EPS / (4 + EPS) - EPS / (4 + EPS)
    # zero vs b0: inter 0, union 4, enclosing (0,0)-(3,3) area 9: e/(4+e) - (9-4+e)/(9+e).
    a1b0 = EPS / (4 + EPS) - (5 + EPS) / (9 + EPS)
    # two zero boxes: iou e/e = 1, enclosing area 0: 1 - e/e = 0 (finite thanks to the 1e-6 terms).
    a1b1 = 0.0
    expected = torch.tensor([[a0b0, a0b1], [a1b0, a1b1]])
    torch.testing.assert_close(giou, expected)


def test_generalized_box_iou_rejects_inverted_boxes():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="boxes2"):
        generalized_box_iou(good, torch.tensor([[0.5, 0.0, 0.2, 1.0]]))


def test_paired_giou_is_the_diagonal_and_broadcasts():
    gen = torch.Generator().manual_seed(0)
    boxes1 = box_cxcywh_to_xyxy(torch.rand(6, 4, generator=gen))
    boxes2 = box_cxcywh_to_xyxy(torch.rand(6, 4, generator=gen))
    torch.testing.assert_close(generalized_box_iou_paired(boxes1, boxes2),
                               torch.diag(generalized_box_iou(boxes1, boxes2)))
    # [3, 2, 4] against [1, 2, 4]: each of the 3 rows against the same two boxes.
    grid = generalized_box_iou_paired(boxes1.view(3, 2, 4), boxes2[:2].view(1, 2, 4))
    assert grid.shape == (3, 2)
    torch.testing.assert_close(grid[2], generalized_box_iou_paired(boxes1[4:6], boxes2[:2]))


def test_masks_to_boxes_by_hand():
    masks = torch.zeros(2, 4, 5)
    masks[0, 1:3, 2:5] = 1  # rows 1..2, cols 2..4
    boxes = masks_to_boxes(masks)
    torch.testing.assert_close(boxes, torch.tensor([[2.0, 1.0, 4.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
    assert masks_to_boxes(torch.zeros(0, 3, 3)).shape == (0, 4)
