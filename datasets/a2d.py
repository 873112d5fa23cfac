"""A2D-Sentences (spec 5.1/5.2) from its released files, under --a2d_path::

    Release/clips320H/<video>.mp4                      videos, 320 px high
    Release/videoset.csv                               vid, label, start, end, height, width, frames,
                                                       annotated frames, subset (0 train, 1 test); no header
    text_annotations/a2d_annotation.txt                CSV video_id,instance_id,query
    text_annotations/a2d_missed_videos.txt             videos without sentences
    text_annotations/a2d_annotation_with_instances/<video>/<frame:05d>.h5
        'instance' ids present, 'reMask' masks stored transposed [N, W, H] ([W, H] for one instance)
    a2d_sentences_single_frame_{train,test}_annotations.json    MTTR: [query, video, frame (1-based), instance]
    a2d_sentences_test_annotations_in_coco_format.json          MTTR: COCO ground truth of the test samples

The two MTTR JSON files are used when present; otherwise they are rebuilt in memory from the release
files the same way (one sample per sentence and annotated frame in which its instance appears).
Only the annotated frame of a clip has a mask: targets carry ``valid_indices`` (its position in the
clip) and ``image_id`` 'v_<video>_f_<frame>_i_<instance>'. Frames are decoded with
:mod:`datasets.video_io` (PyAV/OpenCV), only up to the last frame a clip needs.
"""
from __future__ import annotations

import csv
import json
import logging
from argparse import Namespace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datasets import register_dataset, register_evaluator
from datasets.a2d_eval import evaluate_referring_frames, load_or_build_coco_gt
from datasets.transforms_video import Compose, Normalize, RandomResize, ToTensor
from datasets.video_io import VideoReadError, count_decoded_frames, count_frames, read_frames
from datasets.ytvos import (clean_caption, first_visible_sample, mask_box_xyxy, sample_clip_indices,
                            transforms_from_args)

logger = logging.getLogger(__name__)

VIDEO_DIR = Path("Release") / "clips320H"
VIDEOSET_CSV = Path("Release") / "videoset.csv"
TEXT_DIR = Path("text_annotations")
MASK_DIR = TEXT_DIR / "a2d_annotation_with_instances"
SAMPLES_JSON = "a2d_sentences_single_frame_{}_annotations.json"
COCO_GT_JSON = "a2d_sentences_test_annotations_in_coco_format.json"
SUBSET_CODES = {"train": "0", "test": "1"}

Sample = tuple[str, str, int, int]  # (query, video, frame 1-based, instance id)


def a2d_image_id(video: str, frame: int, instance: int) -> str:
    return f"v_{video}_f_{frame}_i_{instance}"


# ---------------------------------------------------------------------------------------------- annotations

def read_instance_masks(path: Path) -> tuple[list[int], np.ndarray]:
    """(instance ids, masks uint8 [N, H, W]) of one annotated frame (the h5 stores masks transposed)."""
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"A2D mask annotation not found: {path}")
    with h5py.File(path, "r") as handle:
        for key in ("instance", "reMask"):
            if key not in handle:
                raise ValueError(f"{path}: missing dataset '{key}'")
        ids = [int(v) for v in np.asarray(handle["instance"]).reshape(-1)]
        masks = np.asarray(handle["reMask"])
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[0] != len(ids):
        raise ValueError(f"{path}: {len(ids)} instance ids but reMask holds {masks.shape[0]} masks")
    return ids, np.ascontiguousarray(masks.transpose(0, 2, 1)).astype(np.uint8)


def read_instance_mask(path: Path, instance: int) -> np.ndarray:
    """Binary mask [H, W] of `instance` in one annotated frame."""
    ids, masks = read_instance_masks(path)
    if instance not in ids:
        raise ValueError(f"{path}: instance {instance} not annotated in this frame (ids {ids})")
    return masks[ids.index(instance)]


def _used_videos(root: Path, split: str) -> set[str]:
    """Videos of `split` in videoset.csv minus a2d_missed_videos.txt."""
    path = root / VIDEOSET_CSV
    if not path.is_file():
        raise FileNotFoundError(f"A2D video list not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    bad = next((i for i, row in enumerate(rows, 1) if len(row) < 9), None)
    if bad is not None:
        raise ValueError(f"{path}:{bad}: expected 9 columns (vid, label, start, end, height, width, frames, "
                         "annotated frames, subset)")
    missed_path = root / TEXT_DIR / "a2d_missed_videos.txt"
    missed = set(missed_path.read_text(encoding="utf-8").split()) if missed_path.is_file() else set()
    return {row[0] for row in rows if row[8].strip() == SUBSET_CODES[split]} - missed


def build_a2d_samples(root: Path, split: str) -> list[Sample]:
    """The MTTR single-frame sample list rebuilt from the release files (sentence order, frames sorted)."""
    videos = _used_videos(root, split)
    path = root / TEXT_DIR / "a2d_annotation.txt"
    if not path.is_file():
        raise FileNotFoundError(f"A2D sentences not found: {path}")
    samples: list[Sample] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            video, instance = row["video_id"], row["instance_id"].strip()
            if video not in videos or not instance.isdigit():  # skips the known '1 (copy)' annotation error
                continue
            for h5 in sorted((root / MASK_DIR / video).glob("*.h5")):
                ids, _ = read_instance_masks(h5)
                if int(instance) in ids:
                    samples.append((row["query"].lower(), video, int(h5.stem), int(instance)))
    return samples


def load_a2d_samples(root: Path, split: str) -> list[Sample]:
    """MTTR's a2d_sentences_single_frame_<split>_annotations.json, or the same list rebuilt."""
    path = root / SAMPLES_JSON.format(split)
    if not path.is_file():
        logger.info("%s not found; building the %s samples from the release files", path, split)
        return build_a2d_samples(root, split)
    with open(path, encoding="utf-8") as handle:
        entries = json.load(handle)
    samples = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) != 4:
            raise ValueError(f"{path}: entry {i} should be [query, video_id, frame_idx, instance_id], got {entry!r}")
        query, video, frame, instance = entry
        samples.append((str(query), str(video), int(frame), int(instance)))
    return samples


# ---------------------------------------------------------------------------------------------- dataset

def frame_eval_transforms(args: Namespace) -> Callable:
    """A2D/JHMDB evaluation transform: shorter side --eval_short_side (360), longer side <= --max_size (640)."""
    return Compose([RandomResize([args.eval_short_side], args.max_size), ToTensor(), Normalize()])


def centred_window(frame: int, num_frames: int, first: int, last: int) -> list[int]:
    """T indices centred on `frame` ([frame - T//2, frame + (T+1)//2)), clamped to [first, last] (edges repeat)."""
    return [min(max(i, first), last) for i in range(frame - num_frames // 2, frame + (num_frames + 1) // 2)]


def single_frame_target(mask: np.ndarray, indices: list[int], anchor: int, caption: str,
                        image_id: str) -> dict[str, Any]:
    """Target of a clip whose only annotated frame is `anchor` (spec 5.2, A2D/JHMDB)."""
    box = mask_box_xyxy(mask > 0)
    height, width = mask.shape
    return {
        "frames_idx": torch.tensor(indices, dtype=torch.long),
        "valid_indices": torch.tensor([indices.index(anchor)], dtype=torch.long),
        "labels": torch.zeros(1, dtype=torch.long),
        "boxes": torch.tensor([box or (0, 0, 0, 0)], dtype=torch.float32),
        "masks": torch.from_numpy((mask > 0).astype(np.float32))[None],
        "valid": torch.tensor([box is not None], dtype=torch.long),
        "caption": clean_caption(caption),
        "orig_size": torch.tensor([height, width], dtype=torch.long),
        "size": torch.tensor([height, width], dtype=torch.long),
        "image_id": image_id,
    }


def check_frame_size(frame_size: tuple[int, int], mask: np.ndarray, frame_source: Any, mask_source: Any) -> None:
    """Frames and mask must have the same (H, W)."""
    if tuple(frame_size) != tuple(mask.shape):
        raise ValueError(f"{frame_source}: frames are {tuple(frame_size)} (H, W) but the mask {mask_source} is "
                         f"{tuple(mask.shape)}")


class A2DSentencesDataset(Dataset):
    """One item per (sentence, annotated frame): a T-frame clip and the annotated frame's target.

    train: the annotated frame plus local/global frames sampled as Ref-YTVOS (spec 5.2); clips whose
    object is lost by the augmentation are replaced by a random other sample. Evaluation: the T frames
    centred on the annotated frame, clamped to the video.
    """

    def __init__(self, root: Path, samples: list[Sample], transforms: Callable, num_frames: int, train: bool):
        self.root = Path(root)
        self.samples = samples
        self.transforms = transforms
        self.num_frames = num_frames
        self.train = train
        self._lengths: dict[str, int] = {}
        logger.info("A2D-Sentences %s: %d samples", "train" if train else "test", len(samples))

    def __len__(self) -> int:
        return len(self.samples)

    def video_path(self, video: str) -> Path:
        return self.root / VIDEO_DIR / f"{video}.mp4"

    def video_length(self, video: str) -> int:
        if video not in self._lengths:
            self._lengths[video] = count_frames(self.video_path(video))
        return self._lengths[video]

    def clip_indices(self, anchor: int, video_len: int) -> list[int]:
        if self.train:
            return sample_clip_indices(anchor, video_len, self.num_frames)
        return centred_window(anchor, self.num_frames, 0, video_len - 1)

    def _try_read_clip(self, video: str, anchor: int) -> tuple[list[int], list[Any]]:
        video_len = self.video_length(video)
        if anchor >= video_len:
            raise ValueError(f"{self.video_path(video)}: annotated frame {anchor + 1} beyond its {video_len} frames")
        indices = self.clip_indices(anchor, video_len)
        return indices, read_frames(self.video_path(video), indices)

    def _read_clip(self, video: str, anchor: int) -> tuple[list[int], list[Any]]:
        """Indices and frames; if the container over-reports its length, recount by decoding and resample."""
        try:
            return self._try_read_clip(video, anchor)
        except VideoReadError:
            self._lengths[video] = count_decoded_frames(self.video_path(video))
            return self._try_read_clip(video, anchor)

    def load_sample(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        query, video, frame, instance = self.samples[idx]
        indices, frames = self._read_clip(video, frame - 1)
        mask_path = self.root / MASK_DIR / video / f"{frame:05d}.h5"
        mask = read_instance_mask(mask_path, instance)
        check_frame_size((frames[0].height, frames[0].width), mask, self.video_path(video), mask_path)
        target = single_frame_target(mask, indices, frame - 1, query, a2d_image_id(video, frame, instance))
        imgs, target = self.transforms(frames, target)
        target["valid"] = target["valid"].long()
        return imgs, target

    def __getitem__(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        if not self.train:
            return self.load_sample(idx)
        return first_visible_sample(self.load_sample, idx, len(self), f"A2D-Sentences {self.root}")


def existing_root(path: str, dataset: str, flag: str) -> Path:
    """The dataset root as a Path, or an error naming the flag that points to it."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset} root {root} does not exist ({flag})")
    return root


@register_dataset("a2d")
def build_a2d(image_set: str, args: Namespace) -> Dataset:
    """'train' -> training clips; 'val'/'valid'/'test' -> the test split (A2D has no separate validation set)."""
    root = existing_root(args.a2d_path, "A2D-Sentences", "--a2d_path")
    if image_set == "train":
        return A2DSentencesDataset(root, load_a2d_samples(root, "train"), transforms_from_args("train", args),
                                   args.num_frames, train=True)
    if image_set in ("val", "valid", "test"):
        return A2DSentencesDataset(root, load_a2d_samples(root, "test"), frame_eval_transforms(args),
                                   args.num_frames, train=False)
    raise ValueError(f"unknown image_set {image_set!r}; expected 'train', 'val', 'valid' or 'test'")


def a2d_coco_gt(dataset: A2DSentencesDataset) -> dict[str, Any]:
    """MTTR's COCO ground truth file if present, else the same built from the samples' h5 masks."""
    masks = dataset.root / MASK_DIR
    return load_or_build_coco_gt(dataset.root / COCO_GT_JSON, (
        (a2d_image_id(video, frame, instance), read_instance_mask(masks / video / f"{frame:05d}.h5", instance))
        for _, video, frame, instance in dataset.samples))


@register_evaluator("a2d")
def evaluate_a2d(model: Any, postprocessors: dict, args: Namespace, device: Any) -> Optional[dict[str, Any]]:
    """mAP (COCO, all queries), overall/mean IoU and P@K (top query) on the A2D-Sentences test split."""
    dataset = build_a2d("test", args)
    return evaluate_referring_frames(model, postprocessors, dataset, lambda: a2d_coco_gt(dataset), args, device)
