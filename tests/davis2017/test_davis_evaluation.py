"""DAVIS-2017 protocols: unsupervised Hungarian matching, semi-supervised, loading and errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from davis2017 import DAVISEvaluation, reference
from davis2017.davis import read_label_sequence, split_void
from davis2017.evaluation import (
    EvaluationResult,
    ObjectResult,
    score_semisupervised,
    score_unsupervised,
)
from davis2017.synthetic import blob_sequence, noisy_prediction
from tests.davis2017.davis_fixture import write_davis_tree, write_results


def object_masks(labels: np.ndarray, n_objects: int) -> np.ndarray:
    return np.stack([labels == k for k in range(1, n_objects + 1)])


def swap_ids(labels: np.ndarray, order: list[int]) -> np.ndarray:
    """Relabel id k as order[k - 1]."""
    lookup = np.array([0, *order], dtype=labels.dtype)
    return lookup[labels]


@pytest.fixture(scope="module")
def blob_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    gt = blob_sequence(rng, 6, 48, 80, n_objects=3, with_void=True)
    prediction = noisy_prediction(rng, gt, max_shift=2)
    labels, void = split_void(gt)
    return labels, void, prediction


def test_unsupervised_equals_reference(blob_case):
    labels, void, prediction = blob_case
    j, f = score_unsupervised(labels, prediction, void)
    ref_j, ref_f = reference.evaluate_unsupervised(object_masks(labels, 3), object_masks(prediction, 3), void)
    np.testing.assert_allclose(j, ref_j, rtol=0, atol=1e-6)
    np.testing.assert_allclose(f, ref_f, rtol=0, atol=1e-6)


def test_unsupervised_matching_is_invariant_to_swapped_ids(blob_case):
    labels, void, prediction = blob_case
    j, f = score_unsupervised(labels, prediction, void)
    swapped = swap_ids(prediction, [3, 1, 2])
    swapped_j, swapped_f = score_unsupervised(labels, swapped, void)
    # objects are reported in result-id order (as officially), so compare them as sets
    np.testing.assert_allclose(sorted(map(tuple, swapped_j)), sorted(map(tuple, j)), atol=1e-12)
    np.testing.assert_allclose(sorted(map(tuple, swapped_f)), sorted(map(tuple, f)), atol=1e-12)
    by_id = np.mean([reference.db_eval_iou(labels == k, swapped == k, void) for k in (1, 2, 3)])
    assert swapped_j.mean() > by_id + 0.2  # the assignment undid the swap


def test_unsupervised_pads_missing_objects():
    gt = np.zeros((3, 20, 30), dtype=np.uint8)
    gt[:, 2:8, 2:8] = 1
    gt[:, 10:18, 15:25] = 2
    result = np.where(gt == 2, 1, 0).astype(np.uint8)  # only gt object 2, under id 1
    j, f = score_unsupervised(gt, result)
    assert j.shape == (2, 3)
    assert sorted(j.mean(axis=1).tolist()) == [0.0, 1.0]
    assert sorted(f.mean(axis=1).tolist()) == [0.0, 1.0]


def test_unsupervised_rejects_more_than_20_proposals():
    gt = np.zeros((2, 10, 10), dtype=np.uint8)
    gt[:, 2:5, 2:5] = 1
    with pytest.raises(ValueError, match="20 proposals"):
        score_unsupervised(gt, np.full_like(gt, 255))


def test_semisupervised_matches_ids_and_skips_first_and_last_frames():
    gt = np.zeros((5, 20, 20), dtype=np.uint8)
    gt[:, 3:9, 3:9] = 1
    gt[:, 12:18, 10:16] = 2
    result = gt[1:-1].copy()
    j, f = score_semisupervised(gt, result)
    assert j.shape == (2, 3) and np.all(j == 1) and np.all(f == 1)
    j_swapped, _ = score_semisupervised(gt, swap_ids(result, [2, 1]))
    assert np.all(j_swapped == 0)  # no re-matching in the semi-supervised protocol
    with pytest.raises(ValueError, match="only 2 objects"):
        score_semisupervised(gt, np.full_like(result, 3))


def test_global_scores_are_object_weighted():
    result = EvaluationResult(
        [ObjectResult("a_1", 1.0, 1.0, 0.0, 0.8, 1.0, 0.1), ObjectResult("a_2", 0.0, 0.0, 0.0, 0.2, 0.0, 0.0),
         ObjectResult("b_1", 0.5, 1.0, 0.3, 0.5, 0.0, 0.2)]
    )
    scores = result.global_scores()
    assert scores["J-Mean"] == pytest.approx(0.5)
    assert scores["F-Mean"] == pytest.approx(0.5)
    assert scores["J&F-Mean"] == pytest.approx(0.5)
    assert scores["J-Recall"] == pytest.approx(2 / 3)
    assert scores["F-Decay"] == pytest.approx(0.1)


@pytest.fixture()
def davis_case(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    gts = {"seq-a": blob_sequence(rng, 4, 40, 64, 2, with_void=True), "seq-b": blob_sequence(rng, 3, 40, 64, 1)}
    predictions = {name: noisy_prediction(rng, labels, max_shift=2) for name, labels in gts.items()}
    root = write_davis_tree(tmp_path / "DAVIS", gts)
    results = write_results(tmp_path / "results", predictions)
    return root, results, gts


def test_evaluation_reads_the_tree_and_equals_direct_scoring(davis_case):
    root, results, gts = davis_case
    evaluation = DAVISEvaluation(str(root), "unsupervised", "val")
    result = evaluation.evaluate(str(results))
    assert [obj.name for obj in result.objects] == ["seq-a_1", "seq-a_2", "seq-b_1"]
    labels, void = split_void(gts["seq-a"])
    prediction = read_label_sequence([str(results / "seq-a" / f"{t:05d}.png") for t in range(4)])
    j, _ = score_unsupervised(labels, prediction, void)
    assert result.objects[0].j_mean == pytest.approx(float(np.nanmean(j[0])))
    parallel = evaluation.evaluate(str(results), num_workers=2)
    assert parallel == result


def test_missing_or_wrong_size_results_name_the_frame(davis_case):
    root, results, _ = davis_case
    evaluation = DAVISEvaluation(str(root), "unsupervised", "val")
    (results / "seq-b" / "00001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"seq-b.*00001"):
        evaluation.evaluate(str(results))
    write_results(results, {"seq-b": np.zeros((3, 20, 20), dtype=np.uint8)})
    with pytest.raises(ValueError, match=r"seq-b.*00000\.png.*\(20, 20\).*\(40, 64\)"):
        evaluation.evaluate(str(results))


def test_missing_tree_parts_are_named(tmp_path: Path, davis_case):
    root, _, _ = davis_case
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        DAVISEvaluation(str(tmp_path / "nowhere"), "unsupervised", "val")
    (root / "Annotations_unsupervised").rename(root / "moved")
    with pytest.raises(FileNotFoundError, match="Annotations_unsupervised"):
        DAVISEvaluation(str(root), "unsupervised", "val")
    (root / "moved").rename(root / "Annotations_unsupervised")
    with pytest.raises(FileNotFoundError, match="test-dev.txt"):
        DAVISEvaluation(str(root), "unsupervised", "test-dev")
    with pytest.raises(ValueError, match="task"):
        DAVISEvaluation(str(root), "zero-shot", "val")
