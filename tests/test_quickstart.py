"""tools/quickstart.py end to end on a tiny dataset (the real run is too long for CI), and its attribute table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tools.quickstart import jf_by_attribute, main


def test_jf_by_attribute_groups_expressions_by_the_words_they_use() -> None:
    videos = {"v": {"expressions": {
        "0": {"attrs": {"colour": "red"}, "motion_required": False},
        "1": {"attrs": {"shape": "circle", "motion": "left"}, "motion_required": True},
        "2": {"attrs": {"shape": "square", "colour": "blue"}, "motion_required": False},
    }}}
    records = [{"video_id": "v", "exp_id": "0", "j": 1.0, "f": 0.8},
               {"video_id": "v", "exp_id": "1", "j": 0.0, "f": 0.2},
               {"video_id": "v", "exp_id": "2", "j": 0.5, "f": 0.5}]
    table = jf_by_attribute(records, videos)
    assert table == {"colour": {"jf": 0.7, "n": 2}, "shape": {"jf": 0.3, "n": 2}, "motion": {"jf": 0.1, "n": 1},
                     "motion_required": {"jf": 0.1, "n": 1}}


def test_quickstart_runs_end_to_end_on_a_tiny_dataset(tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    threads = torch.get_num_threads()
    try:
        assert main(["--output_dir", str(out), "--data_dir", str(data), "--threads", "1", "--",
                     "--synthetic_train_videos", "2", "--synthetic_valid_videos", "2", "--synthetic_frames", "4"]) == 0
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "summary.json").read_text())
    per_expression = json.loads((out / "per_expression.json").read_text())
    n = summary["n_expressions"]
    assert n == len(per_expression["true"]) == len(per_expression["swapped"]) > 0
    for key in ("jf", "j", "f", "jf_swapped"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["jf"] == pytest.approx((summary["j"] + summary["f"]) / 2)
    assert sum(v["n"] for k, v in summary["jf_by_attribute"].items() if k != "motion_required") >= n
    assert list((out / "overlays").glob("*/*.png"))
    assert (data / "synthetic_info.json").is_file()
