"""Ref-DAVIS17: converter (links, original tree intact), loader, inference per annotator, eval_davis, average."""
from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval_davis
import inference_davis
from datasets.davis import DAVIS_CATEGORIES, build_davis
from tests.benchmarks.bench_fixtures import H, W, davis_labels, write_davis_raw
from tests.davis2017.davis_fixture import write_davis_tree
from tools import average_davis_annotators
from tools.data.convert_davis_to_ytvos import convert, parse_expression_line


@pytest.fixture(scope="module")
def ref_davis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_davis_raw(tmp_path_factory.mktemp("ref-davis"), write_davis_tree)
    convert(root, mode="symlink")
    return root


def test_converter_links_and_interleaves_annotators(ref_davis: Path) -> None:
    davis = ref_davis / "DAVIS"
    assert (davis / "JPEGImages" / "480p" / "blackswan" / "00000.jpg").is_file()  # original tree untouched
    linked = ref_davis / "valid" / "JPEGImages" / "blackswan"
    assert linked.is_symlink() and linked.resolve() == (davis / "JPEGImages" / "480p" / "blackswan").resolve()
    assert (ref_davis / "train" / "Annotations" / "bike-packing" / "00002.png").is_file()
    meta = json.loads((ref_davis / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    assert sorted(meta) == ["blackswan", "dogs-scale"]  # 'dog-scale' in annot1 fixed to 'dogs-scale'
    scale = meta["dogs-scale"]
    assert scale["frames"] == ["00000", "00001", "00002"]
    assert [scale["expressions"][str(i)]["exp"] for i in range(8)] == [
        "a dog", "dog on a scale", "small dog", "the dog", "a scale", "the scale", "grey scale", "weighing scale"]
    assert [scale["expressions"][str(i)]["obj_id"] for i in range(8)] == ["1"] * 4 + ["2"] * 4
    train = json.loads((ref_davis / "meta_expressions" / "train" / "meta_expressions.json").read_text())["videos"]
    assert train["bike-packing"]["expressions"]["2"] == {"exp": "caf\u00e9 man", "obj_id": "1"}  # latin-1 file
    categories = json.loads((ref_davis / "train" / "meta.json").read_text())["videos"]["bike-packing"]["objects"]
    assert categories == {"1": {"category": "person"}, "2": {"category": "bicycle"}}


def test_converter_copy_mode_and_bad_lines(tmp_path: Path) -> None:
    root = write_davis_raw(tmp_path / "raw", write_davis_tree)
    convert(root, output_dir=tmp_path / "copied", mode="copy")
    copied = tmp_path / "copied" / "valid" / "Annotations" / "blackswan"
    assert copied.is_dir() and not copied.is_symlink() and (copied / "00001.png").is_file()
    assert (root / "DAVIS" / "Annotations_unsupervised" / "480p" / "blackswan").is_dir()
    assert parse_expression_line('dog-scale  2  "a  big scale" ', "f:1") == ("dogs-scale", 2, "a big scale")
    with pytest.raises(ValueError, match="f:3"):
        parse_expression_line("blackswan swan", "f:3")


def test_davis_training_clips_use_the_davis_categories(ref_davis: Path) -> None:
    args = Namespace(davis_path=str(ref_davis), num_frames=2, train_short_sides=[48], max_size=64,
                     crop_short_sides=[48], crop_range=[40, 48], eval_short_side=48, no_photometric=True)
    dataset = build_davis("train", args)
    imgs, target = dataset[0]
    assert imgs.shape[0] == 2
    assert set(target["labels"].tolist()) <= {DAVIS_CATEGORIES["person"], DAVIS_CATEGORIES["bicycle"]}
    assert len(build_davis("val", args)) == 12  # 'val' is an alias of the converted 'valid'


def test_merge_objects_is_argmax_over_background_and_objects() -> None:
    probs_1 = torch.tensor([[[0.9, 0.4, 0.6, 0.7]]])
    probs_2 = torch.tensor([[[0.95, 0.45, 0.6, 0.2]]])
    labels = inference_davis.merge_objects([(1, probs_1), (2, probs_2)], 0.5, (1, 1, 4))
    assert labels.tolist() == [[[2, 0, 1, 1]]]  # below threshold -> background; ties -> earlier object
    assert inference_davis.merge_objects([], 0.5, (2, 1, 3)).sum() == 0


def test_inference_eval_and_annotator_average(ref_davis: Path, tmp_path: Path, tiny_session_flags: list[str],
                                              tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = tiny_session_flags + ["--davis_path", str(ref_davis), "--output_dir", str(out), "--resume",
                                 str(tiny_checkpoint), "--clip_len", "2"]
    assert inference_davis.main(argv) == 0
    for slot in range(4):
        png = Image.open(out / "valid" / f"anno_{slot}" / "dogs-scale" / "00002.png")
        assert png.mode == "P" and png.size == (W, H)
        assert set(np.unique(np.asarray(png))) <= {0, 1, 2}
    for slot in range(4):
        assert eval_davis.main(["--davis_path", str(ref_davis / "DAVIS"), "--results_path",
                                str(out / "valid" / f"anno_{slot}"), "--num_workers", "1"]) == 0
    capsys.readouterr()
    assert average_davis_annotators.main([str(out / "valid")]) == 0
    printed = capsys.readouterr().out
    assert "anno_3" in printed and "mean" in printed
    assert (out / "valid" / "global_results-val-annotators.csv").is_file()


def test_perfect_results_average_to_one(ref_davis: Path, tmp_path: Path) -> None:
    """The averaging tool on four exact copies of the ground truth: every J&F is 1."""
    from tests.davis2017.davis_fixture import write_results

    for slot in range(4):
        folder = tmp_path / f"anno_{slot}"
        write_results(folder, {v: davis_labels(v) for v in ("blackswan", "dogs-scale")})
        assert eval_davis.main(["--davis_path", str(ref_davis / "DAVIS"), "--results_path", str(folder),
                                "--num_workers", "1"]) == 0
    table = average_davis_annotators.annotator_table(tmp_path, "val")
    assert table[1][-1][:3] == ["mean", "1.000", "1.000"]


def test_dist_test_davis_script_usage() -> None:
    import subprocess

    script = Path(__file__).resolve().parents[2] / "scripts" / "dist_test_davis.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr
