"""Score Ref-YouTube-VOS-format predictions locally against a split that has annotations.

    python eval_ytvos.py --results_path DIR_OR_ZIP --ytvos_path ROOT [--split valid] [--num_workers N]

--results_path is inference_ytvos.py's output folder (holding Annotations/) or its submission.zip;
ROOT/<split>/Annotations must exist: our synthetic dataset's valid split, or a held-out part of Ref-YTVOS
train made with tools/data/make_ytvos_holdout.py (the official valid annotations are private; the
CodaLab server scores those). Per expression, J (region IoU) and F (boundary F-measure, DAVIS-2017
definitions, davis2017/) are averaged over the video's frames; the table reports their means over
expressions and J&F = (J + F) / 2, as the Ref-YTVOS server does. Writes
per-expression_results-<split>.csv and global_results-<split>.csv next to the results.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from davis2017.metrics import db_eval_boundary, db_eval_iou
from davis2017.report import format_table, write_csv_atomic
from datasets.ytvos import VideoExpressionSet, load_label_map

ANNOTATIONS = "Annotations"


class ResultsReader:
    """Predicted masks from a results folder (with Annotations/) or a submission zip."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.archive: Optional[zipfile.ZipFile] = None
        if self.path.is_file():
            self.archive = zipfile.ZipFile(self.path)
        elif not (self.path / ANNOTATIONS).is_dir():
            raise FileNotFoundError(f"{self.path}: expected a folder holding {ANNOTATIONS}/ or a submission zip")

    def mask(self, video: str, exp_id: str, frame: str) -> np.ndarray:
        """Binary mask [H, W] of one frame (pixels > 127 of the 0/255 PNG)."""
        name = f"{ANNOTATIONS}/{video}/{exp_id}/{frame}.png"
        try:
            if self.archive is not None:
                with Image.open(io.BytesIO(self.archive.read(name))) as image:
                    return np.array(image.convert("L")) > 127
            with Image.open(self.path / name) as image:
                return np.array(image.convert("L")) > 127
        except (KeyError, FileNotFoundError):
            raise FileNotFoundError(f"{self.path}: no prediction {name}") from None


def score_video(job: tuple[Path, str, Path, str, dict[str, Any]]) -> list[dict[str, Any]]:
    """J and F of every expression of one video."""
    results_path, split, root, video, entry = job
    reader = ResultsReader(results_path)
    labels = np.stack([load_label_map(root / split / ANNOTATIONS / video / f"{f}.png") for f in entry["frames"]])
    rows = []
    for exp_id, exp in entry["expressions"].items():
        gt = (labels == int(exp["obj_id"])).astype(np.uint8)
        pred = np.stack([reader.mask(video, exp_id, f) for f in entry["frames"]]).astype(np.uint8)
        if pred.shape != gt.shape:
            raise ValueError(f"{results_path}: {video}/{exp_id} predictions are {pred.shape[1:]} (H, W), the "
                             f"annotations {gt.shape[1:]}")
        rows.append({"video": video, "exp_id": exp_id, "J": float(np.mean(db_eval_iou(gt, pred))),
                     "F": float(np.mean(db_eval_boundary(gt, pred)))})
    return rows


def evaluate(results_path: Path, root: Path, split: str, num_workers: int = 1) -> list[dict[str, Any]]:
    """Per-expression J and F for every expression of the split."""
    if not (root / split / ANNOTATIONS).is_dir():
        raise FileNotFoundError(f"{root / split / ANNOTATIONS}: this split has no annotations to score against")
    expressions = VideoExpressionSet(root, split, transform=None)
    jobs = [(results_path, split, root, video, expressions.videos[video]) for video in sorted(expressions.videos)]
    if num_workers > 1:
        with mp.get_context("spawn").Pool(num_workers) as pool:
            parts = pool.map(score_video, jobs)
    else:
        parts = [score_video(job) for job in jobs]
    return [row for part in parts for row in part]


def summary_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    j = float(np.mean([r["J"] for r in rows])) if rows else float("nan")
    f = float(np.mean([r["F"] for r in rows])) if rows else float("nan")
    return ["J&F", "J", "F", "expressions"], [[f"{(j + f) / 2:.4f}", f"{j:.4f}", f"{f:.4f}", str(len(rows))]]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_path", type=Path, required=True,
                        help="inference_ytvos.py output folder (with Annotations/) or submission.zip")
    parser.add_argument("--ytvos_path", type=Path, default=Path("data/ref-youtube-vos"),
                        help="Ref-YTVOS-format root whose <split>/Annotations hold the ground truth")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    try:
        rows = evaluate(args.results_path, args.ytvos_path, args.split, args.num_workers)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out_dir = args.results_path if args.results_path.is_dir() else args.results_path.parent
    table = summary_table(rows)
    write_csv_atomic(str(out_dir / f"per-expression_results-{args.split}.csv"),
                     (["video", "exp_id", "J", "F"], [[r["video"], r["exp_id"], f"{r['J']:.4f}", f"{r['F']:.4f}"]
                                                      for r in rows]))
    write_csv_atomic(str(out_dir / f"global_results-{args.split}.csv"), table)
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
