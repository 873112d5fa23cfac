"""Average the DAVIS-2017 global results of the four Ref-DAVIS17 annotator runs (the number papers report).

    python tools/average_davis_annotators.py DIR/valid [--set val]

Reads DIR/valid/anno_<k>/global_results-<set>.csv written by eval_davis.py for k = 0..3, prints one
row per annotator and their mean, and writes the table to DIR/valid/global_results-<set>-annotators.csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from davis2017.report import Table, csv_paths, format_table, read_csv_table, write_csv_atomic  # noqa: E402

NUM_ANNOTATORS = 4


def annotator_table(results_dir: Path, subset: str) -> Table:
    """Rows anno_0..anno_3 and 'mean' of the global metrics (J&F-Mean, J-Mean, ...)."""
    header: Optional[list[str]] = None
    rows, values = [], []
    for k in range(NUM_ANNOTATORS):
        path = Path(csv_paths(str(results_dir / f"anno_{k}"), subset)[0])
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run eval_davis.py --results_path {path.parent} first")
        columns, table_rows = read_csv_table(str(path))
        if header is not None and columns != header:
            raise ValueError(f"{path}: columns {columns} differ from anno_0's {header}")
        header = columns
        numbers = [float(cell) if cell else float("nan") for cell in table_rows[0]]
        values.append(numbers)
        rows.append([f"anno_{k}"] + table_rows[0])
    mean = [sum(column) / NUM_ANNOTATORS for column in zip(*values)]
    rows.append(["mean"] + [f"{v:.3f}" for v in mean])
    return ["Annotator"] + list(header or []), rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path, help="folder holding anno_0 .. anno_3 (inference_davis.py DIR/valid)")
    parser.add_argument("--set", default="val", help="DAVIS subset the CSVs were computed on")
    args = parser.parse_args(argv)
    try:
        table = annotator_table(args.results_dir, args.set)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = args.results_dir / f"global_results-{args.set}-annotators.csv"
    write_csv_atomic(str(out), table)
    print(format_table(table))
    print(f"\nRef-DAVIS17 J&F (mean of the {NUM_ANNOTATORS} annotators): {table[1][-1][1]}  (table saved in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
