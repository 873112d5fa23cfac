"""JHMDB-Sentences: metadata paths resolved under --jhmdb_path (not 'data'), .mat masks, --eval end to end."""
from __future__ import annotations

import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.jhmdb import build_jhmdb, jhmdb_coco_gt, resolve_metadata_path
from tests.benchmarks.bench_fixtures import jhmdb_mask, write_jhmdb_tree


@pytest.fixture(scope="module")
def jhmdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jhmdb_tree(tmp_path_factory.mktemp("somewhere") / "my_jhmdb")


def test_metadata_paths_resolve_under_the_given_root(tmp_path: Path) -> None:
    stored = "./jhmdb_sentences/Rename_Images/clap/v1/00002.png"
    assert resolve_metadata_path(tmp_path, stored) == tmp_path / "Rename_Images" / "clap" / "v1" / "00002.png"
    assert resolve_metadata_path(tmp_path, "puppet_mask/a/v/puppet_mask.mat") == tmp_path / "puppet_mask/a/v/puppet_mask.mat"


def test_items_read_frames_and_mat_masks(jhmdb_root: Path, tmp_path: Path) -> None:
    args = Namespace(jhmdb_path=str(jhmdb_root), num_frames=3, eval_short_side=48, max_size=64)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # no 'data' folder here: upstream's hard-coded prefix would fail
    try:
        dataset = build_jhmdb("val", args)
        imgs, target = dataset[1]  # clap_video_0, last frame (4 of 4): window [3, 4, 4]
    finally:
        os.chdir(cwd)
    assert len(dataset) == 4 and imgs.shape == (3, 3, 48, 64)
    assert target["frames_idx"].tolist() == [3, 4, 4] and target["valid_indices"].tolist() == [1]
    assert target["image_id"] == "v_clap_video_0_f_4"
    assert torch.equal(target["masks"][0].bool(), torch.from_numpy(jhmdb_mask("clap_video_0", 3)).bool())
    red = imgs[:, 0].mean(dim=(1, 2)) * 0.229 + 0.485
    assert np.allclose(red.numpy() * 255, [80, 120, 120], atol=2)
    with pytest.raises(ValueError, match="evaluation-only"):
        build_jhmdb("train", args)


def test_ground_truth_rebuilt_from_masks_matches_the_file(jhmdb_root: Path) -> None:
    dataset = build_jhmdb("val", Namespace(jhmdb_path=str(jhmdb_root), num_frames=1, eval_short_side=48, max_size=64))
    given = jhmdb_coco_gt(dataset)
    gt_file = jhmdb_root / "jhmdb_sentences_gt_annotations_in_coco_format.json"
    gt_file.rename(jhmdb_root / "moved.json")
    try:
        built = jhmdb_coco_gt(dataset)
    finally:
        (jhmdb_root / "moved.json").rename(gt_file)
    assert [a["segmentation"] for a in built["annotations"]] == [a["segmentation"] for a in given["annotations"]]
    assert [i["id"] for i in built["images"]] == [i["id"] for i in given["images"]]


def test_eval_from_main(jhmdb_root: Path, tmp_path: Path, tiny_session_flags: list[str], tiny_checkpoint: Path) -> None:
    from main import main
    from opts import parse_args

    stats = main(parse_args(tiny_session_flags + [
        "--dataset_file", "jhmdb", "--jhmdb_path", str(jhmdb_root), "--eval", "--resume", str(tiny_checkpoint),
        "--num_frames", "2", "--output_dir", str(tmp_path / "out"), "--batch_size", "2"]))
    assert stats["n"] == 4
    assert 0.0 <= stats["mAP"] <= 1.0 and 0.0 <= stats["overall_iou"] <= 1.0
    assert (tmp_path / "out" / "eval.json").is_file()
