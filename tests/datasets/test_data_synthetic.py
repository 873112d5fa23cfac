"""The synthetic dataset: layout, determinism, and that every sentence identifies exactly one object.

The identification check does not reuse the generator's semantics: it parses the sentence text with
its own word lists and re-derives the referent from the object attributes and trajectories stored
in synthetic_info.json.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import build_dataset
from datasets.synthetic import INFO_FILE, POSITION_MARGIN, SyntheticConfig, generate_video, write_dataset
from datasets.transforms_video import make_video_transforms
from datasets.ytvos import VideoExpressionSet, YTVOSDataset

ROOT = Path(__file__).resolve().parents[2]
SMALL = SyntheticConfig(seed=3, train_videos=6, valid_videos=3, frames=6, height=64, width=64)

COLOUR_WORDS = {"red", "green", "blue", "yellow", "purple", "white"}
SHAPE_WORDS = {"circle", "square", "triangle"}
SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
MOTION_PATTERNS = [
    (r"\b(?:moving|moves|going|heading) (?:to the )?(left|right)\b", None),
    (r"\b(?:moving|moves|going) (up|down)(?:wards)?\b", None),
    (r"\brising\b", "up"), (r"\bfalling\b", "down"),
    (r"\b(?:not moving|standing still|stays still|does not move|staying in place)\b", "still"),
]
POSITION_PATTERNS = [
    (r"\b(?:on|at) the (left|right)(?: side)?\b", None), (r"\b(?:at|near) the (top|bottom)\b", None),
    (r"\bupper part\b", "top"), (r"\blower part\b", "bottom"),
    (r"\bleftmost\b", "left"), (r"\brightmost\b", "right"), (r"\b(?:topmost|uppermost|highest)\b", "top"),
    (r"\b(?:bottommost|lowest)\b", "bottom"),
]


def parse_expression(text: str) -> dict[str, str]:
    """Attributes a sentence states, read from its words only."""
    words = set(re.findall(r"[a-z]+", text))
    attrs: dict[str, str] = {}
    for key, vocabulary in (("colour", COLOUR_WORDS), ("shape", SHAPE_WORDS)):
        found = words & vocabulary
        assert len(found) <= 1, text
        if found:
            attrs[key] = found.pop()
    sizes = {SIZE_WORDS[w] for w in words & set(SIZE_WORDS)}
    if sizes:
        attrs["size"] = sizes.pop()
    for key, patterns in (("motion", MOTION_PATTERNS), ("position", POSITION_PATTERNS)):
        values = {fixed or m.group(1) for pattern, fixed in patterns for m in re.finditer(pattern, text)}
        assert len(values) <= 1, f"{text!r}: several {key} phrases"
        if values:
            attrs[key] = values.pop()
    return attrs


def referents(attrs: dict[str, str], objects: dict[str, dict], margin: float) -> list[str]:
    """Objects matching the intrinsic attributes, then (for a position) the ones extreme among them."""
    candidates = [oid for oid, o in objects.items()
                  if all(o[k] == v for k, v in attrs.items() if k != "position")]
    if "position" not in attrs:
        return candidates
    axis = 0 if attrs["position"] in ("left", "right") else 1
    sign = -1 if attrs["position"] in ("left", "top") else 1
    coords = {oid: sign * np.asarray(objects[oid]["centres"])[:, axis] for oid in candidates}
    return [oid for oid in candidates
            if all(np.all(coords[oid] >= coords[other] + margin) for other in candidates if other != oid)]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    write_dataset(root, SMALL)
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_ref_ytvos(synthetic_root: Path) -> None:
    for split, count in (("train", SMALL.train_videos), ("valid", SMALL.valid_videos)):
        meta = json.loads((synthetic_root / "meta_expressions" / split / "meta_expressions.json").read_text())
        objects = json.loads((synthetic_root / split / "meta.json").read_text())["videos"]
        assert len(meta["videos"]) == count and set(objects) == set(meta["videos"])
        for video, entry in meta["videos"].items():
            assert entry["frames"] == [f"{i:05d}" for i in range(SMALL.frames)]
            for name in entry["frames"]:
                frame = Image.open(synthetic_root / split / "JPEGImages" / video / f"{name}.jpg")
                annotation = Image.open(synthetic_root / split / "Annotations" / video / f"{name}.png")
                assert frame.format == "JPEG" and frame.size == (64, 64)
                assert annotation.mode == "P" and annotation.size == (64, 64)
                ids = set(np.unique(np.asarray(annotation)).tolist()) - {0}
                assert ids <= {int(o) for o in objects[video]["objects"]}
                for oid, obj in objects[video]["objects"].items():
                    assert (int(oid) in ids) == (name in obj["frames"])
            for exp in entry["expressions"].values():
                assert exp["obj_id"] in objects[video]["objects"] and exp["exp"] == exp["exp"].lower()


def test_deterministic_from_seed(synthetic_root: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "again", SMALL)
    assert tree_digest(tmp_path / "again") == tree_digest(synthetic_root)
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": 4, "train_videos": 2, "valid_videos": 0})
    assert generate_video(other, "train", 0).expressions != generate_video(SMALL, "train", 0).expressions


def test_video_does_not_depend_on_split_size() -> None:
    fewer = SyntheticConfig(**{**SMALL.__dict__, "train_videos": 2})
    a, b = generate_video(SMALL, "train", 1), generate_video(fewer, "train", 1)
    assert np.array_equal(a.images, b.images) and [e.text for e in a.expressions] == [e.text for e in b.expressions]


def test_every_expression_identifies_exactly_its_object() -> None:
    cfg = SyntheticConfig(seed=11, frames=8, height=96, width=96)
    margin = POSITION_MARGIN * 96
    checked = motion_required = 0
    for index in range(120):
        video = generate_video(cfg, "train", index, render=False)
        objects = {str(o.obj_id): dict(o.attributes(), centres=o.centres) for o in video.objects}
        for exp in video.expressions:
            stated = parse_expression(exp.text)
            assert stated == exp.attrs, f"{exp.text!r} states {stated}, generator recorded {exp.attrs}"
            assert referents(stated, objects, margin) == [str(exp.obj_id)], (exp.text, objects)
            checked += 1
            if exp.motion_required:
                motion_required += 1
                target = objects[str(exp.obj_id)]
                twins = [o for oid, o in objects.items() if oid != str(exp.obj_id)
                         and all(o[k] == target[k] for k in ("colour", "shape", "size"))]
                assert twins and "motion" in stated and "position" not in stated
                assert all(t["motion"] != target["motion"] for t in twins)
    assert checked > 300
    assert 0.08 <= motion_required / checked <= 0.3, motion_required / checked


def test_objects_are_visible_and_some_leave_the_frame() -> None:
    cfg = SyntheticConfig(seed=5, frames=10, height=96, width=96)
    partly_gone = 0
    for index in range(40):
        video = generate_video(cfg, "valid", index)
        for obj in video.objects:
            area = (video.labels == obj.obj_id).sum(axis=(1, 2))
            assert (area > 0).sum() >= 4
            partly_gone += int((area == 0).any())
            radius = obj.radius
            assert 0.08 * 96 <= radius <= 0.22 * 96
    assert partly_gone > 0


def test_read_back_through_the_ytvos_readers(synthetic_root: Path) -> None:
    train = YTVOSDataset(synthetic_root / "train",
                         synthetic_root / "meta_expressions" / "train" / "meta_expressions.json",
                         transforms=lambda frames, target: (frames, target), num_frames=3)
    frames, target = train[0]
    assert len(frames) == 3 and target["valid"].any() and target["masks"].shape == (3, 64, 64)
    transform = make_video_transforms("valid", train_short_sides=[64], max_size=64, crop_short_sides=[64],
                                      crop_range=(48, 64), eval_short_side=32)
    item = VideoExpressionSet(synthetic_root, "valid", transform)[0]
    assert item["frames"].shape == (SMALL.frames, 3, 32, 32)
    assert item["gt_masks"].shape == (SMALL.frames, 64, 64) and item["gt_masks"].any()


def synthetic_args(path: Path) -> Namespace:
    return Namespace(dataset_file="synthetic", synthetic_path=str(path), num_frames=2, train_short_sides=[48],
                     max_size=64, crop_short_sides=[56], crop_range=(40, 56), eval_short_side=48,
                     no_photometric=True, synthetic_train_videos=2, synthetic_valid_videos=1, synthetic_frames=4,
                     synthetic_size=[48, 48], synthetic_seed=1)


def test_build_dataset_generates_missing_data_atomically(tmp_path: Path) -> None:
    args = synthetic_args(tmp_path / "syn")
    train = build_dataset("train", args)
    imgs, target = train[0]
    assert imgs.shape[:2] == (2, 3) and min(imgs.shape[-2:]) == 48 and target["boxes"].shape == (2, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"], "no temporary folder may remain"
    info = json.loads((tmp_path / "syn" / INFO_FILE).read_text())
    assert info["config"]["frames"] == 4 and info["config"]["height"] == 48
    valid = build_dataset("valid", args)
    assert len(valid) == len(json.loads((tmp_path / "syn" / "meta_expressions" / "valid" /
                                         "meta_expressions.json").read_text())["videos"]["valid_00000"]["expressions"])


def test_build_dataset_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "syn").mkdir()
    (tmp_path / "syn" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        build_dataset("train", synthetic_args(tmp_path / "syn"))


def test_cli_writes_dataset_and_refuses_to_overwrite(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "tools" / "make_synthetic.py"), "--out", str(tmp_path / "cli"),
               "--seed", "2", "--train_videos", "2", "--valid_videos", "1", "--frames", "3", "--size", "40", "56"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train"]["videos"] == 2
    assert Image.open(tmp_path / "cli" / "train" / "JPEGImages" / "train_00000" / "00002.jpg").size == (56, 40)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr


def test_existing_dataset_is_reused_and_mismatch_warned(synthetic_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = Namespace(dataset_file="synthetic", synthetic_path=str(synthetic_root), num_frames=2,
                     train_short_sides=[64], max_size=64, crop_short_sides=[64], crop_range=(48, 64),
                     eval_short_side=64, no_photometric=True)
    with caplog.at_level("WARNING", logger="datasets.synthetic"):
        build_dataset("valid", args)
    assert not caplog.records, "no flags given: nothing to compare"
    args.synthetic_frames = 9
    with caplog.at_level("WARNING", logger="datasets.synthetic"):
        build_dataset("valid", args)
    assert "'frames': (6, 9)" in caplog.text
