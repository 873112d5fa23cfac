"""J, F and statistics of davis2017.metrics against hand-computed cases and the reference."""
from __future__ import annotations

import numpy as np
import pytest

from davis2017 import reference
from davis2017.metrics import (
    boundary_radius,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    decay_bins,
    describe_object,
    dilate_packed,
    disk,
    tolerance_disk,
)
from davis2017.synthetic import VOID_LABEL, blob_sequence, noisy_prediction


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary of one [H, W] mask through the fast path's boundary pixels."""
    frames = describe_object(mask[None], kernel=disk(1))
    bmap = np.zeros(mask.shape, dtype=bool)
    bmap[frames.boundary_y, frames.boundary_x] = True
    return bmap


def test_disk_matches_the_skimage_definition():
    assert disk(0).tolist() == [[1]]
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert int(disk(8).sum()) == 197  # lattice points with x^2 + y^2 <= 64


def test_boundary_radius():
    assert boundary_radius(480, 854) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius(40, 40) == 1
    assert boundary_radius(480, 854, bound_th=3) == 3  # >= 1 is a radius in pixels
    assert boundary_radius(480, 854, bound_th=2.5) == 2.5


def test_seg2bmap_last_row_and_column_rule():
    seg = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=bool)
    expected = np.array([[0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 1, 0]], dtype=bool)
    assert np.array_equal(reference.seg2bmap(seg), expected)
    assert np.array_equal(boundary_map(seg), expected)


def test_boundary_of_one_pixel_and_of_a_square_is_a_ring():
    pixel = square((20, 20), 5, 5, 1)
    assert np.argwhere(boundary_map(pixel)).tolist() == [[4, 4], [4, 5], [5, 4], [5, 5]]
    ring = square((40, 40), 9, 9, 11) & ~square((40, 40), 10, 10, 9)
    assert np.array_equal(boundary_map(square((40, 40), 10, 10, 10)), ring)


def test_full_frame_mask_has_no_boundary():
    full = np.ones((1, 6, 7), dtype=bool)
    assert describe_object(full, kernel=disk(1)).n_boundary.tolist() == [0]
    # both boundaries empty -> F = 1 even though the gt is empty (official special case)
    assert db_eval_boundary(np.zeros((6, 7), bool), full[0]) == 1.0
    assert db_eval_iou(np.zeros((6, 7), bool), full[0]) == 0.0


def test_iou_hand_cases():
    empty = np.zeros((2, 10, 10), dtype=bool)
    assert db_eval_iou(empty, empty).tolist() == [1.0, 1.0]
    gt = square((10, 10), 0, 0, 4)
    pred = square((10, 10), 2, 2, 4)
    assert db_eval_iou(gt, pred) == pytest.approx(4 / 28, abs=1e-12)
    assert db_eval_iou(gt, np.zeros_like(gt)) == 0.0  # prediction empty, gt not
    assert db_eval_iou(np.zeros_like(gt), pred) == 0.0  # no gt object
    one = square((10, 10), 3, 3, 1)
    assert db_eval_iou(one, one) == 1.0
    assert db_eval_iou(one, square((10, 10), 3, 4, 1)) == 0.0
    assert db_eval_iou(gt, pred).shape == ()
    assert db_eval_iou(gt[None], pred[None]).shape == (1,)


def test_void_pixels_are_excluded():
    gt = square((20, 20), 2, 2, 6)
    pred = gt | square((20, 20), 12, 12, 5)
    void = square((20, 20), 10, 10, 10)
    assert db_eval_iou(gt, pred) == pytest.approx(36 / 61)
    assert db_eval_iou(gt, pred, void) == 1.0
    assert db_eval_boundary(gt, pred) < 1.0
    assert db_eval_boundary(gt, pred, void) == 1.0
    # everything void: both empty after removal
    assert db_eval_iou(gt, pred, np.ones_like(gt)) == 1.0
    assert db_eval_boundary(gt, pred, np.ones_like(gt)) == 1.0


def test_boundary_special_cases():
    empty = np.zeros((30, 30), dtype=bool)
    obj = square((30, 30), 5, 5, 8)
    assert db_eval_boundary(empty, empty) == 1.0  # P = R = 1
    assert db_eval_boundary(obj, empty) == 0.0  # prediction empty: P = 1, R = 0
    assert db_eval_boundary(empty, obj) == 0.0  # no gt object: P = 0, R = 1
    one = square((30, 30), 3, 3, 1)
    assert db_eval_boundary(one, one) == 1.0
    assert db_eval_boundary(one, square((30, 30), 20, 20, 1)) == 0.0  # P = R = 0


def test_f_of_a_shifted_square_by_hand():
    # 40x40 -> radius ceil(0.008 * 56.6) = 1 (a cross). Boundaries are 40-pixel rings around rows/cols
    # 9..19 (gt) and rows 9..19 / cols 12..22 (prediction). Prediction pixels within one 4-step of the
    # gt ring: top and bottom rows cols 12..20 (2 x 9) plus (10, 12) and (18, 12) -> 20 of 40; recall
    # is the same by symmetry, so P = R = F = 0.5.
    gt = square((40, 40), 10, 10, 10)
    pred = np.zeros_like(gt)
    pred[10:20, 13:23] = True
    assert db_eval_boundary(gt, pred) == pytest.approx(0.5, abs=1e-12)
    assert reference.db_eval_boundary(gt, pred) == pytest.approx(0.5, abs=1e-12)
    # a radius of 3 pixels (bound_th >= 1 is the radius) reaches across the shift: F = 1
    assert db_eval_boundary(gt, pred, bound_th=3) == 1.0


@pytest.mark.parametrize("bound_th", [0.008, 0.05, 1, 2.5, 4])
def test_fast_metrics_equal_reference_on_random_blobs(bound_th: float):
    rng = np.random.default_rng(7)
    for shape in [(6, 48, 64), (4, 33, 71)]:
        gt = blob_sequence(rng, *shape, n_objects=3, with_void=True)
        pred = noisy_prediction(rng, gt, max_shift=3)
        void = gt == VOID_LABEL
        for k in range(1, 4):
            for pred_id in range(0, 4):
                for frame_void in (None, void):
                    annotation, segmentation = gt == k, pred == pred_id
                    fast_f = db_eval_boundary(annotation, segmentation, frame_void, bound_th)
                    ref_f = reference.db_eval_boundary(annotation, segmentation, frame_void, bound_th)
                    np.testing.assert_allclose(fast_f, ref_f, rtol=0, atol=1e-6)
                    fast_j = db_eval_iou(annotation, segmentation, frame_void)
                    np.testing.assert_allclose(fast_j, reference.db_eval_iou(annotation, segmentation, frame_void),
                                               rtol=0, atol=1e-6)


def test_objects_touching_every_image_edge_equal_reference():
    rng = np.random.default_rng(3)
    masks = rng.random((5, 12, 15)) < 0.5  # salt-and-pepper masks touch all four edges
    other = rng.random((5, 12, 15)) < 0.3
    np.testing.assert_array_equal(db_eval_boundary(masks, other, bound_th=2),
                                  reference.db_eval_boundary(masks, other, bound_th=2))


@pytest.mark.parametrize("radius, width", [(1, 150), (2.5, 150), (8, 150), (8, 128), (70, 130)])
def test_packed_dilation_equals_cv2(radius: float, width: int):
    import cv2

    rng = np.random.default_rng(int(radius * 10))
    image = rng.random((37, width)) < 0.02
    image[:, [0, -1]] = True
    kernel = disk(radius)
    unpacked = np.unpackbits(dilate_packed(image, kernel).view(np.uint8), axis=1, bitorder="little")
    expected = cv2.dilate(image.astype(np.uint8), kernel)
    np.testing.assert_array_equal(unpacked[:, : image.shape[1]], expected)


def test_packed_dilation_does_not_wrap_across_rows():
    import cv2

    image = np.zeros((10, 128), dtype=bool)  # exactly two words per row
    image[5, 0] = image[2, 127] = True
    unpacked = np.unpackbits(dilate_packed(image, disk(1)).view(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(unpacked, cv2.dilate(image.astype(np.uint8), disk(1)))


def test_scalar_and_sequence_outputs():
    gt = square((40, 40), 10, 10, 10)
    f = db_eval_boundary(gt, gt)
    assert isinstance(f, np.ndarray) and f.shape == () and f == 1.0
    assert db_eval_boundary(np.stack([gt, gt]), np.stack([gt, ~gt])).shape == (2,)
    with pytest.raises(ValueError, match="one shape"):
        db_eval_iou(gt, gt[:20])
    assert tolerance_disk(40, 40).shape == (3, 3)


def test_statistics_on_a_hand_made_sequence():
    values = np.array([1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0])
    # ids = round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]; bins share their boundary frame
    assert decay_bins(8) == [slice(0, 3), slice(2, 5), slice(4, 6), slice(5, 8)]
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.5)
    assert recall == pytest.approx(0.5)  # 1, 1, 0.8, 0.6 are > 0.5
    assert decay == pytest.approx((1 + 1 + 0.8) / 3 - (0.2 + 0 + 0) / 3)
    with_nan = db_statistics(np.array([1.0, np.nan, 0.0, 1.0]))
    assert with_nan[0] == pytest.approx(2 / 3)


def test_statistics_match_the_official_uint8_binning_up_to_255_frames():
    rng = np.random.default_rng(0)
    for n_frames in range(1, 256):
        values = rng.random(n_frames)
        assert db_statistics(values) == reference.db_statistics(values), n_frames


def test_statistics_bin_long_sequences_correctly():
    values = np.concatenate([np.ones(100), np.zeros(200)])  # 300 frames
    bins = decay_bins(300)
    assert bins[0] == slice(0, 76) and bins[-1] == slice(224, 300)
    assert db_statistics(values)[2] == 1.0
    assert reference.db_statistics(values)[2] != 1.0  # the uint8 cast wraps the indices
