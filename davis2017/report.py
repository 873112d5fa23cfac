"""The official DAVIS-2017 CSV files and their printed tables."""
from __future__ import annotations

import csv
import math
import os
import tempfile

from davis2017.evaluation import GLOBAL_COLUMNS, EvaluationResult

SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")

Table = tuple[list[str], list[list[str]]]  # header, rows of formatted cells


def csv_paths(results_path: str, subset: str) -> tuple[str, str]:
    """(global_results-<subset>.csv, per-sequence_results-<subset>.csv) inside results_path."""
    return (
        os.path.join(results_path, f"global_results-{subset}.csv"),
        os.path.join(results_path, f"per-sequence_results-{subset}.csv"),
    )


def _cell(value: float) -> str:
    """Three decimals like the official files; NaN as an empty cell."""
    return "" if math.isnan(value) else f"{value:.3f}"


def result_tables(result: EvaluationResult) -> tuple[Table, Table]:
    """(global table, per-sequence table) with formatted cells."""
    scores = result.global_scores()
    global_table = (list(GLOBAL_COLUMNS), [[_cell(scores[column]) for column in GLOBAL_COLUMNS]])
    rows = [[obj.name, _cell(obj.j_mean), _cell(obj.f_mean)] for obj in result.objects]
    return global_table, (list(SEQUENCE_COLUMNS), rows)


def write_csv_atomic(path: str, table: Table) -> None:
    """Write a table as CSV through a temporary file so readers never see a partial file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".csv")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(table[0])
            writer.writerows(table[1])
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def read_csv_table(path: str) -> Table:
    """Read a CSV written by write_csv_atomic (or by the official toolkit)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path}: empty CSV, expected a header row")
    return rows[0], rows[1:]


def format_table(table: Table) -> str:
    """Right-aligned plain-text table."""
    header, rows = table
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [" ".join(str(cell).rjust(width) for cell, width in zip(line, widths)) for line in [header, *rows]]
    return "\n".join(lines)
