"""Fast DAVIS-2017 J/F evaluator vs the straightforward per-frame implementation, side by side.

    python bench/bench_davis_eval.py [--sequences 3] [--frames 40] [--height 480] [--width 854]
        [--objects 3] [--repeats 3] [--seed 0]

Synthetic 480p sequences of moving blob objects (with a void region) and noisy predictions whose
ids are permuted. Both implementations score the same data in this process; the table gives the
best wall time of --repeats runs, the speed-up and the largest absolute difference of their J/F.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from davis2017 import metrics, reference  # noqa: E402
from davis2017.davis import split_void  # noqa: E402
from davis2017.evaluation import score_semisupervised, score_unsupervised  # noqa: E402
from davis2017.synthetic import blob_sequence, noisy_prediction  # noqa: E402

Sequence = tuple[np.ndarray, np.ndarray, np.ndarray]  # gt labels (void set to 0), void, prediction


def make_sequences(args: argparse.Namespace) -> list[Sequence]:
    rng = np.random.default_rng(args.seed)
    sequences = []
    for _ in range(args.sequences):
        gt = blob_sequence(rng, args.frames, args.height, args.width, args.objects, with_void=True)
        prediction = noisy_prediction(rng, gt)
        permutation = np.concatenate([[0], rng.permutation(args.objects) + 1]).astype(np.uint8)
        labels, void = split_void(gt)
        sequences.append((labels, void, permutation[prediction]))
    return sequences


def object_masks(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == k for k in range(1, int(labels.max()) + 1)])


def best_time(run: Callable[[], list[np.ndarray]], repeats: int) -> tuple[float, list[np.ndarray]]:
    """Smallest wall time of `repeats` runs and the last run's outputs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = run()
        times.append(time.perf_counter() - start)
    return min(times), outputs


def cases(sequences: list[Sequence]) -> dict[str, tuple[Callable, Callable]]:
    """Name -> (fast run, reference run); each run returns a list of J/F arrays."""

    def flat(pairs):
        return [array for pair in pairs for array in pair]

    first = [(labels == 1, prediction == 1, void) for labels, void, prediction in sequences]
    return {
        "unsupervised protocol (all pairs + Hungarian)": (
            lambda: flat(score_unsupervised(lab, pred, void) for lab, void, pred in sequences),
            lambda: flat(
                reference.evaluate_unsupervised(object_masks(lab), object_masks(pred), void)
                for lab, void, pred in sequences
            ),
        ),
        "semi-supervised protocol (id-matched)": (
            lambda: flat(score_semisupervised(lab, pred[1:-1]) for lab, _, pred in sequences),
            lambda: flat(
                (
                    np.stack([reference.db_eval_iou(lab[1:-1] == k, pred[1:-1] == k) for k in range(1, lab.max() + 1)]),
                    np.stack(
                        [reference.db_eval_boundary(lab[1:-1] == k, pred[1:-1] == k) for k in range(1, lab.max() + 1)]
                    ),
                )
                for lab, _, pred in sequences
            ),
        ),
        "db_eval_boundary, one pair": (
            lambda: [metrics.db_eval_boundary(gt, res, void) for gt, res, void in first],
            lambda: [reference.db_eval_boundary(gt, res, void) for gt, res, void in first],
        ),
        "db_eval_iou, one pair": (
            lambda: [metrics.db_eval_iou(gt, res, void) for gt, res, void in first],
            lambda: [reference.db_eval_iou(gt, res, void) for gt, res, void in first],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sequences = make_sequences(args)
    print(
        f"{args.sequences} sequences x {args.frames} frames of {args.height}x{args.width}, {args.objects} objects; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}"
    )
    header = f"| {'case':<46} | {'reference s':>11} | {'fast s':>8} | {'speed-up':>8} | {'max abs diff':>12} |"
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|")
    for name, (fast, slow) in cases(sequences).items():
        fast()  # warm-up: imports, caches
        fast_s, fast_out = best_time(fast, args.repeats)
        slow_s, slow_out = best_time(slow, max(1, args.repeats // 2))
        diff = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(fast_out, slow_out))
        print(f"| {name:<46} | {slow_s:>11.3f} | {fast_s:>8.3f} | {slow_s / fast_s:>7.1f}x | {diff:>12.1e} |")


if __name__ == "__main__":
    main()
