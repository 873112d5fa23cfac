"""Bad data: a clear error naming the file and the field, or (--bad_data skip) a warning, a replacement and a count.

Each case of issue 5 has a test here, on the tiny Ref-YouTube-VOS-format fixture of tests/datasets.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader

from datasets.samplers import BAD_SAMPLES_KEY, BadSampleError, DistributedSampler, SeededSamples
from datasets.transforms_video import make_video_transforms
from datasets.ytvos import VideoExpressionSet, YTVOSDataset, load_frame
from engine import train_one_epoch
from models import build_model
from opts import parse_args
from test_resume import ToyCriterion, ToyModel
from tests.datasets.ytvos_fixture import FRAME_NAMES_A, write_ytvos_fixture
from util.misc import collate_fn
from util.paths import UnsafePathError, safe_join

TINY = dict(train_short_sides=[32], max_size=64, crop_short_sides=[48], crop_range=(24, 48), eval_short_side=24)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return write_ytvos_fixture(tmp_path / "ref_ytvos")


def train_set(root: Path, bad_data: str = "error", num_frames: int = 2) -> YTVOSDataset:
    return YTVOSDataset(root / "train", root / "meta_expressions" / "train" / "meta_expressions.json",
                        make_video_transforms("train", **TINY), num_frames=num_frames, bad_data=bad_data)


def edit_json(path: Path, change: Callable[[dict], Any]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False))


def meta_expressions(root: Path) -> Path:
    return root / "meta_expressions" / "train" / "meta_expressions.json"


def anchor0(dataset: YTVOSDataset, video: str) -> int:
    return next(i for i, s in enumerate(dataset.samples) if s["video"] == video and s["anchor"] == 0)


def first_frame(root: Path) -> Path:
    return root / "train" / "JPEGImages" / "vid_a" / f"{FRAME_NAMES_A[0]}.jpg"


def first_annotation(root: Path) -> Path:
    return root / "train" / "Annotations" / "vid_a" / f"{FRAME_NAMES_A[0]}.png"


# ---- unreadable files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage_jpeg", "truncated_jpeg", "truncated_png"])
def test_corrupt_or_truncated_image_names_the_file(root: Path, damage: str) -> None:
    path = first_annotation(root) if damage == "truncated_png" else first_frame(root)
    data = path.read_bytes()
    path.write_bytes(b"\x00not an image" * 10 if damage == "garbage_jpeg" else data[: len(data) // 2])
    dataset = train_set(root)
    with pytest.raises(BadSampleError, match=rf"{path.name}: cannot decode the (frame|annotation)"):
        dataset[anchor0(dataset, "vid_a")]


def test_missing_frame_names_the_file(root: Path) -> None:
    first_frame(root).unlink()
    dataset = train_set(root)
    with pytest.raises(FileNotFoundError, match=rf"frame not found: .*vid_a/{FRAME_NAMES_A[0]}\.jpg"):
        dataset[anchor0(dataset, "vid_a")]


def _skip_loader(dataset: YTVOSDataset) -> DataLoader:
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False, seed_samples=True)
    return DataLoader(SeededSamples(dataset, "skip"), batch_sampler=BatchSampler(sampler, 1, drop_last=True),
                      collate_fn=collate_fn)


def test_skip_mode_replaces_bad_samples_warns_and_counts_per_epoch(root: Path, caplog: pytest.LogCaptureFixture
                                                                   ) -> None:
    """vid_b's frames are missing: its sample is replaced by a readable one and counted at the end of the epoch."""
    for frame in (root / "train" / "JPEGImages" / "vid_b").iterdir():
        frame.unlink()
    dataset = train_set(root, num_frames=5)
    bad = [i for i, s in enumerate(dataset.samples) if s["video"] == "vid_b"]
    with pytest.raises(FileNotFoundError):
        SeededSamples(dataset, "error")[(bad[0], 0)]
    clips = [targets[0] for _, targets in _skip_loader(dataset)]
    assert len(clips) == len(dataset) and all(t["video_id"] == "vid_a" for t in clips)
    assert [len(t.get(BAD_SAMPLES_KEY, [])) for t in clips] == [int(i in bad) for i in range(len(dataset))]

    model = ToyModel()  # the training loop only needs the clips: it pops, logs and sums the reports
    with caplog.at_level(logging.WARNING):
        stats = train_one_epoch(model, ToyCriterion(set()), _skip_loader(dataset),
                                torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), 0)
    assert stats["bad_samples"] == len(bad)
    assert "vid_b" in caplog.text and f"{len(bad)} bad samples were replaced" in caplog.text


# ---- inconsistent annotations --------------------------------------------------------------------------


def test_annotation_size_different_from_frame(root: Path) -> None:
    path = first_annotation(root)
    with Image.open(path) as image:
        image.resize((32, 24)).save(path)
    dataset = train_set(root)
    with pytest.raises(BadSampleError, match=r"annotation is 32x24 \(WxH\) but its frame .*00000\.jpg is 64x48"):
        dataset[anchor0(dataset, "vid_a")]


def test_frames_of_one_video_with_different_sizes(root: Path) -> None:
    path = root / "valid" / "JPEGImages" / "vid_c" / "00002.jpg"
    Image.new("RGB", (20, 20)).save(path, format="JPEG")
    dataset = VideoExpressionSet(root, "valid", make_video_transforms("valid", **TINY))
    with pytest.raises(BadSampleError, match=r"00002\.jpg: frame is 20x20 \(WxH\), but .*00000\.jpg .* is 48x32"):
        dataset[0]


def test_palette_png_without_the_object_id(root: Path) -> None:
    edit_json(meta_expressions(root), lambda d: d["videos"]["vid_b"]["expressions"]["0"].update(obj_id="7"))
    edit_json(root / "train" / "meta.json",
              lambda d: d["videos"]["vid_b"]["objects"].update({"7": {"category": "cat"}}))
    dataset = train_set(root, num_frames=1)
    with pytest.raises(BadSampleError, match=r"\['vid_b'\]\['expressions'\]\['0'\]\['obj_id'\] = 7 occurs in none "
                                             r"of the 3 annotation PNGs .*object ids present: \[1\]"):
        dataset[anchor0(dataset, "vid_b")]


def test_colour_annotation_instead_of_object_ids(root: Path) -> None:
    Image.new("RGB", (64, 48), (255, 0, 0)).save(first_annotation(root))
    dataset = train_set(root)
    with pytest.raises(BadSampleError, match=r"00000\.png: expected a palette \('P'\) PNG of object ids, got mode RGB"):
        dataset[anchor0(dataset, "vid_a")]


# ---- malformed metadata --------------------------------------------------------------------------------


def test_meta_expressions_not_json_or_without_videos(root: Path) -> None:
    meta_expressions(root).write_text('{"videos": {"vid_a": ')
    with pytest.raises(ValueError, match=r"meta_expressions\.json: not valid JSON"):
        train_set(root, bad_data="skip")
    meta_expressions(root).write_text('{"video": {}}')
    with pytest.raises(ValueError, match=r"meta_expressions\.json: missing field 'videos'"):
        train_set(root, bad_data="skip")


@pytest.mark.parametrize("case, change, message", [
    ("incomplete video", lambda d: d["videos"]["vid_b"].pop("expressions"),
     r"\['vid_b'\]: missing field 'expressions'"),
    ("zero-frame video", lambda d: d["videos"]["vid_b"].update(frames=[]), r"\['vid_b'\]: field 'frames' is empty"),
    ("bad object id", lambda d: d["videos"]["vid_b"]["expressions"]["0"].update(obj_id="one"),
     r"\['vid_b'\]\['expressions'\]\['0'\]\['obj_id'\]: object ids should be non-negative integers"),
    ("empty expression", lambda d: d["videos"]["vid_b"]["expressions"]["0"].update(exp="  \t "),
     r"\['vid_b'\]\['expressions'\]\['0'\]: field 'exp' is empty"),
    ("expression not a string", lambda d: d["videos"]["vid_b"]["expressions"]["0"].update(exp=None),
     r"\['vid_b'\]\['expressions'\]\['0'\]: field 'exp' should be a str, got NoneType"),
])
def test_malformed_entries_error_or_are_skipped(root: Path, caplog: pytest.LogCaptureFixture, case: str,
                                                change: Callable[[dict], Any], message: str) -> None:
    edit_json(meta_expressions(root), change)
    with pytest.raises(BadSampleError, match=r"meta_expressions\.json: videos" + message):
        train_set(root)
    with caplog.at_level(logging.WARNING):
        dataset = train_set(root, bad_data="skip")
    assert {s["video"] for s in dataset.samples} == {"vid_a"}, "only the bad entry is dropped"
    assert "malformed entries skipped" in caplog.text


# ---- names that would become paths ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "..", "/abs/path", "a\\b", "C:evil", "nul\x00byte", ""])
@pytest.mark.parametrize("field", ["video", "expression", "frame"])
def test_ids_and_frame_names_must_be_safe_path_components(root: Path, name: str, field: str) -> None:
    path = root / "meta_expressions" / "valid" / "meta_expressions.json"

    def plant(data: dict) -> None:
        videos = data["videos"]
        if field == "video":
            videos[name] = videos.pop("vid_d")
        elif field == "expression":
            videos["vid_d"]["expressions"][name] = videos["vid_d"]["expressions"].pop("0")
        else:
            videos["vid_d"]["frames"][1] = name

    edit_json(path, plant)
    with pytest.raises(BadSampleError, match="is not a safe file or folder name"):
        VideoExpressionSet(root, "valid", make_video_transforms("valid", **TINY))
    dataset = VideoExpressionSet(root, "valid", make_video_transforms("valid", **TINY), bad_data="skip")
    assert dataset.items == [("vid_c", "0"), ("vid_c", "1")], "only the entry with the bad name is dropped"


def test_safe_join_never_leaves_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert safe_join(out, "vid", "0", "00000.png") == out / "vid" / "0" / "00000.png"
    for parts in (["..", "x"], ["../x"], ["/etc", "passwd"], ["vid", "..", "..", "x"]):
        with pytest.raises(UnsafePathError):
            safe_join(out, *parts)
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="resolves outside"):
        safe_join(out, "link", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "nothing was written anywhere"


# ---- image modes and expressions ---------------------------------------------------------------------------


def test_grayscale_rgba_and_16_bit_frames_become_8_bit_rgb(tmp_path: Path) -> None:
    gray = np.full((6, 8), 100, np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.jpg", quality=100)
    Image.fromarray(np.dstack([np.full((6, 8, 3), 50, np.uint8), np.zeros((6, 8), np.uint8)])).save(
        tmp_path / "rgba.png")
    Image.fromarray(np.full((6, 8), 32896, np.uint16)).save(tmp_path / "deep.png")
    for name, value in (("gray.jpg", 100), ("rgba.png", 50), ("deep.png", 128)):
        frame = load_frame(tmp_path / name)
        assert frame.mode == "RGB" and frame.size == (8, 6), name
        assert np.abs(np.asarray(frame).astype(int) - value).max() <= 1, name


def test_grayscale_and_16_bit_frames_in_a_training_clip(root: Path) -> None:
    for k, name in enumerate(FRAME_NAMES_A):
        path = root / "train" / "JPEGImages" / "vid_a" / f"{name}.jpg"
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"))
        image = Image.fromarray(gray.astype(np.uint16) * 257) if k % 2 else Image.fromarray(gray)
        image.save(path, format="PNG")  # content type wins over the .jpg name
    dataset = train_set(root)
    imgs, target = dataset[anchor0(dataset, "vid_a")]
    assert imgs.shape[1] == 3 and torch.isfinite(imgs).all() and target["valid"].any()


def test_non_ascii_and_very_long_expressions(root: Path, tiny_flags: list[str]) -> None:
    long_text = " ".join(["the tall person wearing a red hat"] * 150)
    edit_json(meta_expressions(root), lambda d: d["videos"]["vid_a"]["expressions"].update(
        {"0": {"exp": "La NIÑA con el sombrero rojo — ¿verdad? 🎩", "obj_id": "1"},
         "1": {"exp": long_text, "obj_id": "2"}}))
    dataset = train_set(root)
    captions = {s["exp_id"]: dataset.load_clip(i)[1]["caption"] for i, s in enumerate(dataset.samples)
                if s["video"] == "vid_a" and s["anchor"] == 0}
    assert captions["0"] == "la niña con el sombrero rojo — ¿verdad? 🎩" and captions["1"] == long_text

    model, _, _ = build_model(parse_args(tiny_flags))
    model.eval()
    tokens = model.tokenizer(list(captions.values()), padding="longest", truncation=True,
                             max_length=model.tokenizer.model_max_length, return_tensors="pt")
    assert tokens["input_ids"].shape[1] == model.tokenizer.model_max_length, "the long one is truncated"
    with torch.no_grad():
        out = model([torch.rand(2, 3, 32, 32)] * 2, list(captions.values()), [{"size": torch.tensor([32, 32])}] * 2)
    assert torch.isfinite(out["pred_masks"]).all() and torch.isfinite(out["pred_logits"]).all()
