"""Reading a DAVIS-2017 tree (JPEGImages, Annotations[_unsupervised], ImageSets) and results folders."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

TASKS = ("semi-supervised", "unsupervised")
SUBSETS = ("train", "val", "test-dev", "test-challenge")
VOID_LABEL = 255


def read_label_png(path: str) -> np.ndarray:
    """Integer label map [H, W] of an indexed (palette) or single-channel PNG."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(
                f"{path}: expected an indexed (palette) or single-channel PNG of object ids, got mode {image.mode}"
            )
        return np.array(image)


def read_label_sequence(paths: list[str], frame_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Stack label maps into [T, H, W]; every frame must have frame_shape (default: the first's)."""
    frames = [read_label_png(path) for path in paths]
    expected = tuple(frame_shape) if frame_shape is not None else (frames[0].shape if frames else (0, 0))
    for path, frame in zip(paths, frames):
        if frame.shape != expected:
            raise ValueError(f"{path}: size {frame.shape}, expected {expected} like the ground-truth frames")
    return np.stack(frames) if frames else np.zeros((0, *expected), dtype=np.uint8)


def split_void(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels with void pixels set to background, void mask): 255 marks pixels left out of scoring."""
    void = labels == VOID_LABEL
    return np.where(void, 0, labels).astype(labels.dtype, copy=False), void


@dataclass(frozen=True)
class DAVISDataset:
    """Ground truth of one DAVIS-2017 subset for one task (file layout of the official toolkit)."""

    root: str
    task: str = "unsupervised"
    subset: str = "val"
    sequences: tuple[str, ...] = ()
    resolution: str = "480p"

    @classmethod
    def open(
        cls, root: str, task: str = "unsupervised", subset: str = "val", sequences: str | list[str] = "all"
    ) -> DAVISDataset:
        """Check the tree and list the sequences ('all' = those of ImageSets/<year>/<subset>.txt)."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        dataset = cls(root, task, subset)
        for folder in (dataset.image_dir, dataset.annotation_dir):
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"DAVIS folder not found: {folder} (check --davis_path {root})")
        if sequences == "all":
            names = dataset._read_image_set()
        else:
            names = [sequences] if isinstance(sequences, str) else list(sequences)
        return cls(root, task, subset, tuple(names))

    @property
    def image_dir(self) -> str:
        """JPEG frames: <root>/JPEGImages/<resolution>/<sequence>/<frame>.jpg (they define the frames)."""
        return os.path.join(self.root, "JPEGImages", self.resolution)

    @property
    def annotation_dir(self) -> str:
        """Ground-truth PNGs: Annotations (semi-supervised) or Annotations_unsupervised."""
        folder = "Annotations" if self.task == "semi-supervised" else "Annotations_unsupervised"
        return os.path.join(self.root, folder, self.resolution)

    @property
    def image_set_file(self) -> str:
        """Sequence list; the unsupervised test sets live under ImageSets/2019 like officially."""
        test_set = self.subset in ("test-dev", "test-challenge")
        year = "2019" if self.task == "unsupervised" and test_set else "2017"
        return os.path.join(self.root, "ImageSets", year, f"{self.subset}.txt")

    def _read_image_set(self) -> list[str]:
        """Sequence names listed in the image set file."""
        if not os.path.isfile(self.image_set_file):
            raise FileNotFoundError(f"DAVIS image set not found: {self.image_set_file}")
        with open(self.image_set_file, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]

    def frame_ids(self, sequence: str) -> list[str]:
        """Sorted frame names (without extension) of a sequence, each with its annotation PNG."""
        image_folder = os.path.join(self.image_dir, sequence)
        images = sorted(name for name in _list_dir(image_folder) if name.endswith(".jpg"))
        if not images:
            raise FileNotFoundError(f"no .jpg frames for sequence {sequence!r} in {image_folder}")
        frame_ids = [os.path.splitext(name)[0] for name in images]
        annotation_folder = os.path.join(self.annotation_dir, sequence)
        annotated = {os.path.splitext(name)[0] for name in _list_dir(annotation_folder) if name.endswith(".png")}
        missing = [frame for frame in frame_ids if frame not in annotated]
        if missing:
            raise FileNotFoundError(
                f"sequence {sequence!r}: {len(missing)} frame(s) without annotation in {annotation_folder}, "
                f"first {missing[0]}.png"
            )
        return frame_ids

    def annotations(self, sequence: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(labels [T, H, W] with void set to 0, void mask [T, H, W], frame ids) of a sequence."""
        frame_ids = self.frame_ids(sequence)
        folder = os.path.join(self.annotation_dir, sequence)
        labels = read_label_sequence([os.path.join(folder, f"{frame}.png") for frame in frame_ids])
        labels, void = split_void(labels)
        return labels, void, frame_ids


def _list_dir(folder: str) -> list[str]:
    """Entries of a folder, or a FileNotFoundError naming it."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder not found: {folder}")
    return os.listdir(folder)


def read_results(results_root: str, sequence: str, frame_ids: list[str], frame_shape: tuple[int, int]) -> np.ndarray:
    """Result label maps [T, H, W] of one sequence: <results_root>/<sequence>/<frame id>.png."""
    folder = os.path.join(results_root, sequence)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no results for sequence {sequence!r}: folder {folder} not found")
    paths = []
    for frame in frame_ids:
        path = os.path.join(folder, f"{frame}.png")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"sequence {sequence!r}, frame {frame}: result {path} not found "
                "(results must be indexed PNGs named like the ground-truth frames)"
            )
        paths.append(path)
    return read_label_sequence(paths, frame_shape)
