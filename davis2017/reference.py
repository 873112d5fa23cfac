"""Straightforward DAVIS-2017 J/F, written frame by frame on full frames like the official toolkit.

Only used to verify and benchmark the fast implementation in `davis2017.metrics`: every frame of
every (result, gt) pair gets its own full-frame seg2bmap and two full-frame disk dilations
(cv2.dilate with the skimage-style disk), and db_statistics keeps the official uint8 index cast.
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from davis2017.metrics import DEFAULT_BOUND_TH, boundary_radius, disk


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a full [H, W] mask with the official last-row/last-column rule."""
    seg = seg.astype(bool)
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = seg ^ east | seg ^ south | seg ^ south_east
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def f_measure(
    foreground: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = DEFAULT_BOUND_TH
) -> float:
    """Boundary F of one [H, W] frame pair."""
    keep = np.ones(foreground.shape, dtype=bool) if void is None else ~void.astype(bool)
    kernel = disk(boundary_radius(*foreground.shape, bound_th))
    fg_boundary = seg2bmap(foreground.astype(bool) & keep)
    gt_boundary = seg2bmap(gt.astype(bool) & keep)
    fg_dilated = cv2.dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel)
    n_fg, n_gt = np.sum(fg_boundary), np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_boundary * gt_dilated) / float(n_fg)
        recall = np.sum(gt_boundary * fg_dilated) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
) -> np.ndarray:
    """F per frame of [T, H, W] masks ([H, W] gives a 0-d array), one frame at a time."""
    if annotation.ndim == 2:
        return np.asarray(f_measure(segmentation, annotation, void_pixels, bound_th))
    return np.array(
        [
            f_measure(segmentation[t], annotation[t], None if void_pixels is None else void_pixels[t], bound_th)
            for t in range(annotation.shape[0])
        ],
        dtype=np.float64,
    )


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None
) -> np.ndarray:
    """J per frame over non-void pixels, 1 where the union is empty."""
    annotation, segmentation = annotation.astype(bool), segmentation.astype(bool)
    keep = np.ones(annotation.shape, dtype=bool) if void_pixels is None else ~void_pixels.astype(bool)
    inter = np.sum(segmentation & annotation & keep, axis=(-2, -1))
    union = np.sum((segmentation | annotation) & keep, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.asarray(inter / union, dtype=np.float64)
    iou[union == 0] = 1.0
    return iou


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Official statistics including the uint8 cast of the decay bin indices."""
    per_frame = np.asarray(per_frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(per_frame)
        recall = np.nanmean(per_frame > 0.5)
        ids = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(np.uint8)
        first = per_frame[ids[0] : ids[1] + 1]
        last = per_frame[ids[3] : ids[4] + 1]
        decay = np.nanmean(first) - np.nanmean(last)
    return float(mean), float(recall), float(decay)


def pair_scores(
    gt_masks: np.ndarray, res_masks: np.ndarray, void: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """J and F [n_res, n_gt, T] of every pair of per-object masks [n, T, H, W]."""
    n_frames = gt_masks.shape[1]
    j_scores = np.zeros((res_masks.shape[0], gt_masks.shape[0], n_frames))
    f_scores = np.zeros_like(j_scores)
    for g in range(gt_masks.shape[0]):
        for r in range(res_masks.shape[0]):
            j_scores[r, g] = db_eval_iou(gt_masks[g], res_masks[r], void)
            f_scores[r, g] = db_eval_boundary(gt_masks[g], res_masks[r], void)
    return j_scores, f_scores


def evaluate_unsupervised(
    gt_masks: np.ndarray, res_masks: np.ndarray, void: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gt-object J and F [n_gt, T] after padding and Hungarian assignment on mean (J+F)/2."""
    if res_masks.shape[0] < gt_masks.shape[0]:
        padding = np.zeros((gt_masks.shape[0] - res_masks.shape[0], *res_masks.shape[1:]), dtype=bool)
        res_masks = np.concatenate([res_masks, padding])
    j_scores, f_scores = pair_scores(gt_masks, res_masks, void)
    rows, cols = linear_sum_assignment(-(np.mean(j_scores, axis=2) + np.mean(f_scores, axis=2)) / 2)
    return j_scores[rows, cols], f_scores[rows, cols]
