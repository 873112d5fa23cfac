"""JHMDB-Sentences (evaluation only; spec 5.1/5.2) under --jhmdb_path::

    Rename_Images/<action>/<video>/<frame:05d>.png             frames, 1-based names
    puppet_mask/<action>/<video>/puppet_mask.mat               'part_mask' [H, W, T]
    jhmdb_sentences_samples_metadata.json                      MTTR: [video, frame path, mask path, frames, query]
    jhmdb_sentences_gt_annotations_in_coco_format.json         MTTR: COCO ground truth (image 'v_<video>_f_<frame>')

The metadata stores paths like './jhmdb_sentences/Rename_Images/...'; upstream joins them to a
hard-coded 'data' folder (spec 11.1 #23). Here they are resolved under --jhmdb_path from their
'Rename_Images' / 'puppet_mask' component on. The COCO ground truth is rebuilt from the masks when its
file is absent. The model is the one trained on A2D-Sentences (``--resume``), without fine-tuning.
"""
from __future__ import annotations

import json
import logging
from argparse import Namespace
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from datasets import register_dataset, register_evaluator
from datasets.a2d import (centred_window, check_frame_size, existing_root, frame_eval_transforms,
                          single_frame_target)
from datasets.a2d_eval import evaluate_referring_frames, load_or_build_coco_gt
from datasets.ytvos import load_frame

logger = logging.getLogger(__name__)

METADATA_JSON = "jhmdb_sentences_samples_metadata.json"
COCO_GT_JSON = "jhmdb_sentences_gt_annotations_in_coco_format.json"
ANCHOR_FOLDERS = ("Rename_Images", "puppet_mask")


def jhmdb_image_id(video: str, frame: int) -> str:
    return f"v_{video}_f_{frame}"


def resolve_metadata_path(root: Path, stored: str) -> Path:
    """A metadata path ('./jhmdb_sentences/Rename_Images/...') under `root`, from its anchor folder on."""
    parts = PurePosixPath(stored.replace("\\", "/")).parts
    for anchor in ANCHOR_FOLDERS:
        if anchor in parts:
            return root.joinpath(*parts[parts.index(anchor):])
    return root.joinpath(*[p for p in parts if p not in (".", "/")])


@lru_cache(maxsize=4)
def read_puppet_masks(path: Path) -> np.ndarray:
    """All frames' masks [T, H, W] uint8 of a puppet_mask.mat (stored [H, W, T] under 'part_mask')."""
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(f"JHMDB mask file not found: {path}")
    data = loadmat(str(path))
    if "part_mask" not in data:
        raise ValueError(f"{path}: no 'part_mask' variable")
    masks = np.asarray(data["part_mask"])
    if masks.ndim != 3:
        raise ValueError(f"{path}: 'part_mask' should be [H, W, T], got shape {masks.shape}")
    return np.ascontiguousarray(masks.transpose(2, 0, 1)).astype(np.uint8)


def frame_mask(path: Path, frame: int) -> np.ndarray:
    """Mask [H, W] of 1-based `frame`."""
    masks = read_puppet_masks(path)
    if not 1 <= frame <= len(masks):
        raise ValueError(f"{path}: frame {frame} requested, the file holds {len(masks)} frames")
    return masks[frame - 1]


class JHMDBSample:
    """One metadata entry with its paths resolved under the dataset root."""

    def __init__(self, root: Path, entry: list, where: str):
        if not isinstance(entry, list) or len(entry) != 5:
            raise ValueError(f"{where}: expected [video_id, frame path, mask path, total frames, query], got {entry!r}")
        self.video, frame_path, mask_path, total, self.query = entry
        self.frame_dir = resolve_metadata_path(root, frame_path).parent
        self.frame = int(PurePosixPath(frame_path).stem)
        self.mask_path = resolve_metadata_path(root, mask_path)
        self.total = int(total)
        self.image_id = jhmdb_image_id(self.video, self.frame)


def load_jhmdb_samples(root: Path) -> list[JHMDBSample]:
    path = root / METADATA_JSON
    if not path.is_file():
        raise FileNotFoundError(f"JHMDB-Sentences samples file not found: {path} (from MTTR; it fixes the 3 "
                                "evaluated frames per video)")
    with open(path, encoding="utf-8") as handle:
        entries = json.load(handle)
    return [JHMDBSample(root, entry, f"{path}: entry {i}") for i, entry in enumerate(entries)]


class JHMDBSentencesDataset(Dataset):
    """One item per metadata entry: the T frames centred on the chosen frame (clamped to 1..total)."""

    def __init__(self, root: Path, transforms: Callable, num_frames: int):
        self.root = Path(root)
        self.samples = load_jhmdb_samples(self.root)
        self.transforms = transforms
        self.num_frames = num_frames
        logger.info("JHMDB-Sentences: %d samples", len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        sample = self.samples[idx]
        indices = centred_window(sample.frame, self.num_frames, 1, sample.total)
        frames = [load_frame(sample.frame_dir / f"{i:05d}.png") for i in indices]
        mask = frame_mask(sample.mask_path, sample.frame)
        check_frame_size((frames[0].height, frames[0].width), mask, sample.frame_dir, sample.mask_path)
        target = single_frame_target(mask, indices, sample.frame, sample.query, sample.image_id)
        imgs, target = self.transforms(frames, target)
        return imgs, target


@register_dataset("jhmdb")
def build_jhmdb(image_set: str, args: Namespace) -> Dataset:
    if image_set == "train":
        raise ValueError("JHMDB-Sentences is evaluation-only: train on A2D-Sentences, then run "
                         "main.py --dataset_file jhmdb --eval --resume A2D_CHECKPOINT")
    if image_set in ("val", "valid", "test"):
        return JHMDBSentencesDataset(existing_root(args.jhmdb_path, "JHMDB-Sentences", "--jhmdb_path"),
                                     frame_eval_transforms(args), args.num_frames)
    raise ValueError(f"unknown image_set {image_set!r}; expected 'val', 'valid' or 'test'")


def jhmdb_coco_gt(dataset: JHMDBSentencesDataset) -> dict[str, Any]:
    """MTTR's COCO ground truth file if present, else the same built from the puppet masks."""
    return load_or_build_coco_gt(dataset.root / COCO_GT_JSON,
                                 ((s.image_id, frame_mask(s.mask_path, s.frame)) for s in dataset.samples))


@register_evaluator("jhmdb")
def evaluate_jhmdb(model: Any, postprocessors: dict, args: Namespace, device: Any) -> Optional[dict[str, Any]]:
    """A2D protocol on JHMDB-Sentences with a model trained on A2D (no fine-tuning)."""
    if not getattr(args, "resume", ""):
        logger.warning("evaluating JHMDB-Sentences without --resume: the model is untrained")
    dataset = build_jhmdb("val", args)
    return evaluate_referring_frames(model, postprocessors, dataset, lambda: jhmdb_coco_gt(dataset), args, device)
