"""Local Ref-YTVOS scoring: a held-out annotated split of train, and eval_ytvos.py on folders and zips."""
from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import eval_ytvos
from tests.datasets.ytvos_fixture import write_ytvos_fixture
from tools.data.make_ytvos_holdout import make_holdout


@pytest.fixture()
def holdout(tmp_path: Path) -> Path:
    source = write_ytvos_fixture(tmp_path / "ref-ytvos")
    assert make_holdout(source, tmp_path / "holdout", num_videos=1, seed=0) == {"train": 1, "valid": 1}
    assert (source / "train" / "JPEGImages" / "vid_a").is_dir() and (source / "train" / "JPEGImages" / "vid_b").is_dir()
    return tmp_path / "holdout"


def _write_predictions(root: Path, out: Path, blank: tuple[str, str] | None = None) -> None:
    """0/255 PNGs equal to the ground truth of every valid expression (all-zero for `blank`)."""
    videos = json.loads((root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    for video, entry in videos.items():
        for exp_id, exp in entry["expressions"].items():
            folder = out / "Annotations" / video / exp_id
            folder.mkdir(parents=True)
            for frame in entry["frames"]:
                labels = np.array(Image.open(root / "valid" / "Annotations" / video / f"{frame}.png"))
                mask = (labels == int(exp["obj_id"])) & ((video, exp_id) != blank)
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{frame}.png")


def _global(folder: Path) -> dict[str, str]:
    with open(folder / "global_results-valid.csv", newline="") as handle:
        return next(csv.DictReader(handle))


def test_perfect_predictions_score_one_from_folder_and_zip(holdout: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    _write_predictions(holdout, out)
    assert eval_ytvos.main(["--results_path", str(out), "--ytvos_path", str(holdout), "--num_workers", "1"]) == 0
    assert _global(out) == {"J&F": "1.0000", "J": "1.0000", "F": "1.0000", "expressions": _global(out)["expressions"]}
    archive = tmp_path / "zipped" / "submission.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as handle:
        for png in sorted(out.rglob("*.png")):
            handle.write(png, png.relative_to(out).as_posix())
    assert eval_ytvos.main(["--results_path", str(archive), "--ytvos_path", str(holdout), "--num_workers", "1"]) == 0
    assert _global(archive.parent)["J&F"] == "1.0000"


def test_an_empty_prediction_scores_zero_for_that_expression(holdout: Path, tmp_path: Path) -> None:
    videos = json.loads((holdout / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    video = next(iter(videos))
    exp_id = next(iter(videos[video]["expressions"]))
    out = tmp_path / "pred"
    _write_predictions(holdout, out, blank=(video, exp_id))
    rows = {(r["video"], r["exp_id"]): r for r in eval_ytvos.evaluate(out, holdout, "valid")}
    assert rows[(video, exp_id)]["J"] < 1.0 and rows[(video, exp_id)]["F"] < 1.0
    assert all(r["J"] == 1.0 for key, r in rows.items() if key != (video, exp_id))
    (out / "Annotations" / video / exp_id / f"{videos[video]['frames'][0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match="no prediction"):
        eval_ytvos.evaluate(out, holdout, "valid")
