"""eval_davis.py end to end on a tiny DAVIS tree with hand-computed J and F."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.davis2017.davis_fixture import write_davis_tree, write_results

ROOT = Path(__file__).resolve().parents[2]

# 40x40 frames: boundary tolerance ceil(0.008 * 56.6) = 1 pixel.
# seq-a: two objects predicted exactly (a void band hides the prediction's extra pixels).
# seq-b: a 10x10 square predicted 3 pixels to the right: J = 70 / 130, F = 0.5 (see the metric tests).
EXPECTED_GLOBAL = {
    "J&F-Mean": ((2 + 7 / 13) / 3 + 2.5 / 3) / 2,
    "J-Mean": (2 + 7 / 13) / 3,
    "J-Recall": 1.0,
    "J-Decay": 0.0,
    "F-Mean": 2.5 / 3,
    "F-Recall": 2 / 3,
    "F-Decay": 0.0,
}
EXPECTED_SEQUENCES = [["seq-a_1", "1.000", "1.000"], ["seq-a_2", "1.000", "1.000"], ["seq-b_1", "0.538", "0.500"]]


def make_case(tmp_path: Path) -> tuple[Path, Path]:
    gt_a = np.zeros((3, 40, 40), dtype=np.uint8)
    gt_a[:, 5:15, 5:15] = 1
    gt_a[:, 20:35, 22:30] = 2
    gt_a[:, 36:, :] = 255
    res_a = gt_a.copy()
    res_a[res_a == 255] = 2  # only in void pixels
    gt_b = np.zeros((3, 40, 40), dtype=np.uint8)
    gt_b[:, 10:20, 10:20] = 1
    res_b = np.zeros_like(gt_b)
    res_b[:, 10:20, 13:23] = 1
    root = write_davis_tree(tmp_path / "DAVIS", {"seq-a": gt_a, "seq-b": gt_b})
    results = write_results(tmp_path / "results", {"seq-a": res_a, "seq-b": res_b})
    return root, results


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "eval_davis.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def read_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def test_cli_writes_official_csvs(tmp_path: Path):
    root, results = make_case(tmp_path)
    stale = results / "global_results-val.csv"
    stale.write_text("J&F-Mean\n9.999\n")
    done = run_cli("--davis_path", str(root), "--results_path", str(results), "--num_workers", "2")
    assert done.returncode == 0, done.stderr
    header, values = read_rows(stale)
    assert header == list(EXPECTED_GLOBAL)
    assert [float(v) for v in values] == pytest.approx(list(EXPECTED_GLOBAL.values()), abs=5e-4)
    assert values[0] == "0.840"  # three decimals, like the official files
    sequences = read_rows(results / "per-sequence_results-val.csv")
    assert sequences == [["Sequence", "J-Mean", "F-Mean"], *EXPECTED_SEQUENCES]
    assert "0.840" in done.stdout and "seq-b_1" in done.stdout
    assert not list(results.glob(".tmp-*"))


def test_cli_recomputes_unless_told_to_reuse(tmp_path: Path):
    root, results = make_case(tmp_path)
    args = ["--davis_path", str(root), "--results_path", str(results), "--num_workers", "1"]
    assert run_cli(*args).returncode == 0
    global_csv = results / "global_results-val.csv"
    global_csv.write_text(",".join(EXPECTED_GLOBAL) + "\n" + ",".join(["0.123"] * 7) + "\n")
    reused = run_cli(*args, "--reuse_results")
    assert reused.returncode == 0 and "0.123" in reused.stdout
    recomputed = run_cli(*args)
    assert recomputed.returncode == 0 and "0.123" not in global_csv.read_text()


def test_cli_reports_missing_result_frames(tmp_path: Path):
    root, results = make_case(tmp_path)
    (results / "seq-b" / "00002.png").unlink()
    done = run_cli("--davis_path", str(root), "--results_path", str(results), "--num_workers", "1")
    assert done.returncode == 1
    assert "seq-b" in done.stderr and "00002" in done.stderr
    assert not (results / "global_results-val.csv").exists()
