"""Score a Ref-DAVIS17 / DAVIS-2017 results folder: J, F and J&F (mean, recall, decay).

    python eval_davis.py --results_path DIR/valid/anno_0 [--davis_path data/ref-davis/DAVIS]
        [--set val] [--task unsupervised|semi-supervised] [--num_workers N] [--reuse_results]

Writes global_results-<set>.csv and per-sequence_results-<set>.csv into --results_path and prints
both tables. ReferFormer scores Ref-DAVIS17 with the unsupervised protocol (Hungarian assignment of
result ids to ground-truth objects); existing CSVs are only re-used with --reuse_results.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from davis2017.davis import SUBSETS, TASKS
from davis2017.evaluation import DAVISEvaluation
from davis2017.report import csv_paths, format_table, read_csv_table, result_tables, write_csv_atomic


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="DAVIS-2017 J&F evaluation of a results folder")
    parser.add_argument(
        "--davis_path",
        default=os.path.join("data", "ref-davis", "DAVIS"),
        help="DAVIS folder holding JPEGImages/480p, Annotations_unsupervised/480p (or Annotations/480p) "
        "and ImageSets/2017",
    )
    parser.add_argument("--set", default="val", choices=SUBSETS, help="subset to evaluate")
    parser.add_argument("--task", default="unsupervised", choices=TASKS, help="evaluation protocol")
    parser.add_argument(
        "--results_path", required=True, help="folder with one sub-folder of indexed PNGs per sequence"
    )
    parser.add_argument(
        "--num_workers", type=int, default=os.cpu_count() or 1, help="processes scoring sequences in parallel"
    )
    parser.add_argument(
        "--reuse_results",
        action="store_true",
        help="print existing CSVs in --results_path instead of recomputing them",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    global_csv, sequence_csv = csv_paths(args.results_path, args.set)
    start = time.time()
    if args.reuse_results and os.path.isfile(global_csv) and os.path.isfile(sequence_csv):
        print(f"Re-using existing results in {args.results_path} (--reuse_results)")
        global_table, sequence_table = read_csv_table(global_csv), read_csv_table(sequence_csv)
    else:
        if not os.path.isdir(args.results_path):
            print(f"error: --results_path {args.results_path} is not a folder", file=sys.stderr)
            return 2
        print(f"Evaluating {args.results_path} on DAVIS-2017 {args.set} ({args.task})")
        try:
            evaluation = DAVISEvaluation(args.davis_path, args.task, args.set)
            result = evaluation.evaluate(args.results_path, num_workers=max(1, args.num_workers), progress=True)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        global_table, sequence_table = result_tables(result)
        write_csv_atomic(global_csv, global_table)
        write_csv_atomic(sequence_csv, sequence_table)
        print(f"Global results saved in {global_csv}")
        print(f"Per-sequence results saved in {sequence_csv}")
    print(f"\n--------------------------- Global results for {args.set} ---------------------------")
    print(format_table(global_table))
    print(f"\n---------- Per sequence results for {args.set} ----------")
    print(format_table(sequence_table))
    print(f"\nTotal time: {time.time() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
