"""DAVIS-2017 semi-supervised and unsupervised evaluation protocols over a results folder.

Protocols as in the official toolkit (spec 7.3): ground-truth objects are ids 1..max id of a
sequence's first annotation, result objects ids 1..max id over all result frames.
- unsupervised (ReferFormer's Ref-DAVIS protocol): at most 20 result objects, padded with empty
  ones up to the number of gt objects; every pair is scored and the Hungarian assignment maximises
  the mean over frames of (J + F) / 2; void (255) pixels are excluded.
- semi-supervised: result id k is gt object k, the first and last frames are not scored and, as in
  the official toolkit, void pixels are not excluded.
As in the official toolkit, the k-th object of a sequence ("<seq>_<k>") is the k-th assigned pair
in the order of result ids, which need not be gt object k in the unsupervised protocol.
"""
from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from davis2017.davis import DAVISDataset, read_results
from davis2017.metrics import (
    DEFAULT_BOUND_TH,
    ObjectFrames,
    db_statistics,
    describe_object,
    pairwise_boundary_f,
    pairwise_iou,
    tolerance_disk,
)

logger = logging.getLogger(__name__)

MAX_PROPOSALS = 20
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _describe_labels(
    labels: np.ndarray, n_objects: int, void: np.ndarray | None, bound_th: float
) -> list[ObjectFrames]:
    """Describe objects 1..n_objects of label maps [T, H, W]; ids absent from the maps are empty."""
    kernel = tolerance_disk(*labels.shape[1:], bound_th)
    mask = np.empty(labels.shape, dtype=bool)  # re-used: fresh large arrays cost page faults
    return [describe_object(np.equal(labels, k, out=mask), void, kernel) for k in range(1, n_objects + 1)]


def _n_gt_objects(gt_labels: np.ndarray, void: np.ndarray | None = None) -> int:
    """Number of gt objects: the largest non-void id of the first frame."""
    if len(gt_labels) == 0:
        return 0
    first = gt_labels[0] if void is None else np.where(void[0], 0, gt_labels[0])
    return int(first.max(initial=0))


def score_unsupervised(
    gt_labels: np.ndarray,
    res_labels: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F [n_gt, T] of the Hungarian-assigned result objects.

    Labels are [T, H, W] id maps and void [T, H, W] the pixels left out of scoring; gt objects
    are ids 1..max non-void id of the gt's first frame.
    """
    n_res = int(res_labels.max(initial=0))
    if n_res > MAX_PROPOSALS:
        raise ValueError(
            f"results have object id {n_res}, more than the {MAX_PROPOSALS} proposals the unsupervised "
            "protocol allows (results must be indexed PNGs with ids 1..N, not 0/255 masks)"
        )
    n_gt = _n_gt_objects(gt_labels, void)
    gt = _describe_labels(gt_labels, n_gt, void, bound_th)
    res = _describe_labels(res_labels, max(n_res, n_gt), void, bound_th)
    j_scores = pairwise_iou(res, gt)
    f_scores = pairwise_boundary_f(res, gt)
    rows, cols = linear_sum_assignment(-(np.mean(j_scores, axis=2) + np.mean(f_scores, axis=2)) / 2)
    return j_scores[rows, cols], f_scores[rows, cols]


def score_semisupervised(
    gt_labels: np.ndarray, res_labels: np.ndarray, bound_th: float = DEFAULT_BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """J and F [n_gt, T - 2] of result id k against gt id k, first and last frames left out.

    gt_labels [T, H, W] must have void pixels already set to 0 (see davis.split_void): like the
    official toolkit, this protocol does not exclude them. res_labels holds frames 1..T-2 only.
    """
    n_gt = _n_gt_objects(gt_labels)
    n_frames = max(len(gt_labels) - 2, 0)
    if len(res_labels) != n_frames:
        raise ValueError(f"expected results for the {n_frames} frames between the first and last, got {len(res_labels)}")
    n_res = int(res_labels.max(initial=0))
    if n_res > n_gt:
        raise ValueError(f"results have object id {n_res} but the ground truth only {n_gt} objects")
    gt = _describe_labels(gt_labels[1:-1], n_gt, None, bound_th)
    res = _describe_labels(res_labels, n_gt, None, bound_th)
    j_scores = [pairwise_iou([r], [g])[0, 0] for r, g in zip(res, gt)]
    f_scores = [pairwise_boundary_f([r], [g])[0, 0] for r, g in zip(res, gt)]
    return np.array(j_scores).reshape(n_gt, n_frames), np.array(f_scores).reshape(n_gt, n_frames)


@dataclass(frozen=True)
class ObjectResult:
    """Statistics of one scored object, named "<sequence>_<k>"."""

    name: str
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float


@dataclass(frozen=True)
class EvaluationResult:
    """Per-object statistics of a whole subset."""

    objects: list[ObjectResult]

    def global_scores(self) -> dict[str, float]:
        """Object-weighted averages of all objects of all sequences, plus J&F-Mean."""
        if not self.objects:
            logger.warning("no objects were scored: global results are NaN")
            return {column: float("nan") for column in GLOBAL_COLUMNS}
        columns = ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay")
        means = [float(np.mean([getattr(obj, column) for obj in self.objects])) for column in columns]
        return dict(zip(GLOBAL_COLUMNS, [(means[0] + means[3]) / 2, *means]))


@dataclass(frozen=True)
class _SequenceJob:
    dataset: DAVISDataset
    results_root: str
    sequence: str
    bound_th: float


def _score_sequence(job: _SequenceJob) -> list[ObjectResult]:
    """Load one sequence's ground truth and results and score its objects."""
    gt_labels, void, frame_ids = job.dataset.annotations(job.sequence)
    if job.dataset.task == "semi-supervised":
        res_labels = read_results(job.results_root, job.sequence, frame_ids[1:-1], gt_labels.shape[1:])
        j_scores, f_scores = score_semisupervised(gt_labels, res_labels, job.bound_th)
    else:
        res_labels = read_results(job.results_root, job.sequence, frame_ids, gt_labels.shape[1:])
        j_scores, f_scores = score_unsupervised(gt_labels, res_labels, void, job.bound_th)
    if len(j_scores) == 0:
        logger.warning("sequence %s has no object in its first annotated frame: nothing scored", job.sequence)
    return [
        ObjectResult(f"{job.sequence}_{k + 1}", *db_statistics(j_scores[k]), *db_statistics(f_scores[k]))
        for k in range(len(j_scores))
    ]


class DAVISEvaluation:
    """Scores results folders against one DAVIS-2017 subset.

    davis_root must hold JPEGImages/480p, Annotations/480p (semi-supervised) or
    Annotations_unsupervised/480p (unsupervised) and ImageSets/2017/<gt_set>.txt.
    """

    def __init__(
        self,
        davis_root: str,
        task: str = "unsupervised",
        gt_set: str = "val",
        sequences: str | list[str] = "all",
        bound_th: float = DEFAULT_BOUND_TH,
    ) -> None:
        self.dataset = DAVISDataset.open(davis_root, task, gt_set, sequences)
        self.bound_th = bound_th

    def evaluate(self, res_path: str, num_workers: int = 1, progress: bool = False) -> EvaluationResult:
        """Score <res_path>/<sequence>/<frame>.png for every sequence, num_workers processes."""
        jobs = [_SequenceJob(self.dataset, res_path, seq, self.bound_th) for seq in self.dataset.sequences]
        per_sequence = _run_jobs(jobs, max(1, min(num_workers, len(jobs))))
        if progress:
            from tqdm import tqdm

            per_sequence = tqdm(per_sequence, total=len(jobs), desc="sequences")
        return EvaluationResult([obj for objects in per_sequence for obj in objects])


def _run_jobs(jobs: list[_SequenceJob], num_workers: int) -> Iterator[list[ObjectResult]]:
    """Score sequences in order, in this process or in a pool of spawned workers."""
    if num_workers == 1:
        yield from map(_score_sequence, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        yield from pool.imap(_score_sequence, jobs)
