"""Tiny benchmark trees in their real on-disk formats, written with the formats' own tools.

- A2D-Sentences: mp4 clips (OpenCV), h5 instance masks stored transposed (h5py), videoset.csv, the
  sentence CSV, MTTR's single-frame JSONs and COCO ground truth (pycocotools).
- JHMDB-Sentences: PNG frames, puppet_mask.mat (scipy), MTTR's metadata JSON with './jhmdb_sentences/...'
  paths.
- DAVIS-2017 + Ref-DAVIS text annotations (the converter's input).
Frame t of every video has red channel 40 * t, so decoded frame order can be checked.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util
from scipy.io import savemat

H, W = 48, 64


def frame_image(t: int, height: int = H, width: int = W) -> np.ndarray:
    """RGB frame t: red 40 * t, a green rectangle that moves with t."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = min(40 * t, 255)
    image[8:20, 4 + 4 * t:20 + 4 * t, 1] = 220
    return image


def rect_mask(y1: int, y2: int, x1: int, x2: int, height: int = H, width: int = W) -> np.ndarray:
    """uint8 mask with rows y1..y2-1 and columns x1..x2-1 set (not square, so a transpose shows)."""
    mask = np.zeros((height, width), np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened(), "OpenCV cannot write mp4 here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def checkpoint_of_method(source: Path, target: Path, method: str) -> Path:
    """A copy of a training checkpoint that claims to come from another --method."""
    from util.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(source)
    ckpt["args"].method = method
    save_checkpoint(ckpt, target)
    return target


def coco_gt(records: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """COCO ground truth as MTTR writes it (ascii RLE counts, category 1)."""
    images, annotations = [], []
    for i, (image_id, mask) in enumerate(records, start=1):
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode("ascii")
        images.append({"id": image_id, "height": mask.shape[0], "width": mask.shape[1]})
        annotations.append({"id": i, "image_id": image_id, "category_id": 1, "segmentation": rle,
                            "area": float(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "dummy_class"}]}


# ---------------------------------------------------------------------------------------------- A2D

A2D_MASKS = {  # (video, frame 1-based) -> {instance: mask}
    ("testvid01", 2): {1: rect_mask(5, 11, 20, 40), 2: rect_mask(30, 44, 2, 10)},
    ("testvid01", 4): {1: rect_mask(6, 12, 24, 44)},
    ("trainvid01", 3): {1: rect_mask(10, 30, 10, 50), 3: rect_mask(0, 4, 0, 4)},
}
A2D_TEST_SAMPLES = [["the red ball on the left", "testvid01", 2, 1], ["the red ball on the left", "testvid01", 4, 1],
                    ["a man jumping", "testvid01", 2, 2]]
A2D_TRAIN_SAMPLES = [["a dog running", "trainvid01", 3, 1], ["a small box", "trainvid01", 3, 3]]


def _write_h5(path: Path, masks: dict[int, np.ndarray]) -> None:
    """A2D frame annotation: ids, masks transposed to [N, W, H] ([W, H] for one instance), boxes [4, N]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(masks)
    stacked = np.stack([masks[i].T for i in ids])
    boxes = np.array([[0, 0, 1, 1]] * len(ids), np.float64).T
    with h5py.File(path, "w") as handle:
        handle["instance"] = np.array(ids, np.float64)
        handle["reMask"] = stacked[0] if len(ids) == 1 else stacked
        handle["reBBox"] = boxes


def write_a2d_tree(root: Path, with_mttr_files: bool = True) -> Path:
    """testvid01 (5 frames, test), trainvid01 (6 frames, train), missed01 (listed as missed)."""
    release = root / "Release"
    write_mp4(release / "clips320H" / "testvid01.mp4", [frame_image(t) for t in range(5)])
    write_mp4(release / "clips320H" / "trainvid01.mp4", [frame_image(t) for t in range(6)])
    with open(release / "videoset.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trainvid01", 11, 0.0, 1.0, H, W, 6, 1, 0])
        writer.writerow(["testvid01", 11, 0.0, 1.0, H, W, 5, 2, 1])
        writer.writerow(["missed01", 11, 0.0, 1.0, H, W, 5, 1, 1])
    text = root / "text_annotations"
    text.mkdir(parents=True)
    (text / "a2d_missed_videos.txt").write_text("missed01\n")
    with open(text / "a2d_annotation.txt", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "instance_id", "query"])
        writer.writerows([["testvid01", "1", "The red ball on the left"], ["testvid01", "2", "a man jumping"],
                          ["trainvid01", "1", "a dog running"], ["trainvid01", "3", "a small box"],
                          ["testvid01", "1 (copy)", "a duplicate row"],
                          ["missed01", "1", "never used"]])
    for (video, frame), masks in A2D_MASKS.items():
        _write_h5(text / "a2d_annotation_with_instances" / video / f"{frame:05d}.h5", masks)
    if with_mttr_files:
        (root / "a2d_sentences_single_frame_test_annotations.json").write_text(json.dumps(A2D_TEST_SAMPLES))
        (root / "a2d_sentences_single_frame_train_annotations.json").write_text(json.dumps(A2D_TRAIN_SAMPLES))
        gt = coco_gt([(f"v_{v}_f_{f}_i_{i}", A2D_MASKS[(v, f)][i]) for _, v, f, i in A2D_TEST_SAMPLES])
        (root / "a2d_sentences_test_annotations_in_coco_format.json").write_text(json.dumps(gt))
    return root


# ---------------------------------------------------------------------------------------------- JHMDB

JHMDB_VIDEOS = {"clap_video_0": ("clap", 4), "run_video_1": ("run", 3)}  # video -> (action, frames)


def jhmdb_mask(video: str, t: int) -> np.ndarray:
    """Mask of 0-based frame t: differs per video and per frame."""
    offset = 0 if video.startswith("clap") else 20
    return rect_mask(4 + t, 16 + t, offset + 2, offset + 30)


def write_jhmdb_tree(root: Path) -> Path:
    """Frames Rename_Images/<action>/<video>/<frame:05d>.png, puppet_mask.mat, MTTR metadata + COCO GT."""
    metadata, records = [], []
    for video, (action, count) in JHMDB_VIDEOS.items():
        frames_dir = root / "Rename_Images" / action / video
        frames_dir.mkdir(parents=True)
        for t in range(count):
            Image.fromarray(frame_image(t)).save(frames_dir / f"{t + 1:05d}.png")
        mask_dir = root / "puppet_mask" / action / video
        mask_dir.mkdir(parents=True)
        masks = np.stack([jhmdb_mask(video, t) for t in range(count)], axis=-1)  # [H, W, T]
        savemat(mask_dir / "puppet_mask.mat", {"part_mask": masks})
        for frame in (1, count):
            metadata.append([video, f"./jhmdb_sentences/Rename_Images/{action}/{video}/{frame:05d}.png",
                             f"./jhmdb_sentences/puppet_mask/{action}/{video}/puppet_mask.mat", count,
                             f"the person doing {action}"])
            records.append((f"v_{video}_f_{frame}", jhmdb_mask(video, frame - 1)))
    (root / "jhmdb_sentences_samples_metadata.json").write_text(json.dumps(metadata))
    (root / "jhmdb_sentences_gt_annotations_in_coco_format.json").write_text(json.dumps(coco_gt(records)))
    return root


# ---------------------------------------------------------------------------------------------- DAVIS

DAVIS_SEQUENCES = {"bike-packing": "train", "blackswan": "val", "dogs-scale": "val"}


def davis_labels(video: str, frames: int = 3) -> np.ndarray:
    """[T, H, W] object ids: object 1 and 2 rectangles (2 absent in blackswan)."""
    labels = np.zeros((frames, H, W), np.uint8)
    for t in range(frames):
        labels[t, 4:20, 4 + 2 * t:24 + 2 * t] = 1
        if video != "blackswan":
            labels[t, 28:44, 36:56] = 2
    return labels


def write_davis_raw(root: Path, davis_tree_writer: Any) -> Path:
    """data/ref-davis as downloaded: DAVIS tree (via the evaluator's fixture writer), semantics, text files."""
    davis = root / "DAVIS"
    for subset in ("train", "val"):
        davis_tree_writer(davis, {v: davis_labels(v) for v, s in DAVIS_SEQUENCES.items() if s == subset}, subset)
    semantics = {"bike-packing": {"1": "person", "2": "bicycle"}, "blackswan": {"1": "bird"},
                 "dogs-scale": {"1": "dog", "2": "scale"}}
    (davis / "davis_semantics.json").write_text(json.dumps(semantics))
    text = root / "davis_text_annotations"
    text.mkdir(parents=True)
    sentences = {  # file -> lines; 'dog-scale' is upstream's misspelling, fixed by the converter
        "Davis17_annot1.txt": ['bike-packing 2 "a bike"', 'bike-packing 1 "a man"', 'blackswan 1 "a black swan"',
                               'dog-scale 1 "a dog"', 'dog-scale 2 "a scale"'],
        "Davis17_annot1_full_video.txt": ['bike-packing 1 "a man riding"', 'bike-packing 2 "a bike ridden"',
                                          'blackswan 1 "a swan swimming"', 'dogs-scale 1 "dog on a scale"',
                                          'dogs-scale 2 "the scale"'],
        "Davis17_annot2.txt": ['bike-packing 1 "caf\u00e9 man"', 'bike-packing 2 "bicycle"', 'blackswan 1 "swan"',
                               'dogs-scale 1 "small dog"', 'dogs-scale 2 "grey scale"'],
        "Davis17_annot2_full_video.txt": ['bike-packing 1 "man"', 'bike-packing 2 "bike"', 'blackswan 1 "bird"',
                                          'dogs-scale 1 "the dog"', 'dogs-scale 2 "weighing scale"'],
    }
    for name, lines in sentences.items():
        encoding = "latin-1" if "annot2" in name else "utf-8"
        (text / name).write_text("\n".join(lines) + "\n", encoding=encoding)
    return root
