"""Ref-YouTube-VOS in its released on-disk layout (spec 5.1), for training and evaluation.

Layout read (``root`` = e.g. data/ref-youtube-vos)::

    root/<split>/JPEGImages/<video>/<frame>.jpg
    root/<split>/Annotations/<video>/<frame>.png      palette PNG, pixel value = object id
    root/<split>/meta.json                            {"videos": {vid: {"objects": {oid: {"category"}}}}}
    root/meta_expressions/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp", "obj_id"}}, "frames": [names]}}}

:class:`YTVOSDataset` builds training clips exactly as spec 5.2 describes; :class:`VideoExpressionSet`
yields every (video, expression) of a split with all its frames, for inference and local scoring.
"""
from __future__ import annotations

import json
import logging
import random
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datasets import register_dataset, register_evaluator
from datasets.samplers import BadSampleError, MissingFileError
from datasets.transforms_video import make_video_transforms
from util.paths import UnsafePathError
from util.paths import check_path_component

logger = logging.getLogger(__name__)

YTVOS_CATEGORY_NAMES = (
    "airplane", "ape", "bear", "bike", "bird", "boat", "bucket", "bus", "camel", "cat", "cow", "crocodile",
    "deer", "dog", "dolphin", "duck", "eagle", "earless_seal", "elephant", "fish", "fox", "frisbee", "frog",
    "giant_panda", "giraffe", "hand", "hat", "hedgehog", "horse", "knife", "leopard", "lion", "lizard",
    "monkey", "motorbike", "mouse", "others", "owl", "paddle", "parachute", "parrot", "penguin", "person",
    "plant", "rabbit", "raccoon", "sedan", "shark", "sheep", "sign", "skateboard", "snail", "snake",
    "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "toilet", "train", "truck", "turtle",
    "umbrella", "whale", "zebra",
)
# The 65 Ref-YTVOS categories, alphabetical ids as in ReferFormer ('others' = 36, 'zebra' = 64).
YTVOS_CATEGORIES: dict[str, int] = {name: i for i, name in enumerate(YTVOS_CATEGORY_NAMES)}

MAX_RESAMPLE_ATTEMPTS = 100


def first_visible_sample(load: Callable[[int], tuple[Tensor, dict[str, Any]]], idx: int, size: int, what: str,
                         on_invisible: Optional[Callable[[int], None]] = None) -> tuple[Tensor, dict[str, Any]]:
    """load(idx), or load of random other indices while augmentation left the referred object invisible.

    ``on_invisible(idx)`` runs before each redraw (e.g. to tell a data error from bad luck).
    """
    for _ in range(MAX_RESAMPLE_ATTEMPTS):
        frames, target = load(idx)
        if bool(target["valid"].any()):
            return frames, target
        if on_invisible is not None:
            on_invisible(idx)
        idx = random.randint(0, size - 1)
    raise RuntimeError(f"{what}: no sample with a visible referred object after {MAX_RESAMPLE_ATTEMPTS} draws")


def clean_caption(caption: str) -> str:
    """Lower-case and collapse whitespace, as ReferFormer does for training captions."""
    return " ".join(caption.lower().split())


def read_json(path: Path) -> Any:
    """Load a JSON file, naming the file in the error when it is missing or malformed."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _field(mapping: Any, key: str, expected: type | tuple[type, ...], where: str) -> Any:
    """mapping[key] checked to be of type `expected`; `where` names the file and position for errors."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise BadSampleError(f"{where}: missing field '{key}'")
    value = mapping[key]
    if not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise BadSampleError(f"{where}: field '{key}' should be a {names}, got {type(value).__name__}")
    return value


def _video_entries(path: Path) -> Iterator[tuple[str, Any, str]]:
    """(video id, entry, location for error messages) for each video of a meta JSON file."""
    for video, entry in _field(read_json(path), "videos", dict, str(path)).items():
        yield video, entry, f"{path}: videos['{video}']"


def checked_name(name: Any, where: str) -> str:
    """`name` if it can safely become a path component (video id, expression id, frame name).

    Otherwise BadSampleError naming the file and field; util/paths.py says why this matters.
    """
    try:
        return check_path_component(name)
    except UnsafePathError as err:
        raise BadSampleError(f"{where}: {err}") from None


def _as_object_id(value: Any, where: str) -> str:
    """An object id as the canonical string key ("1"); ints and zero-padded strings are accepted."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).isdigit():
        raise BadSampleError(f"{where}: object ids should be non-negative integers (as strings), got {value!r}")
    return str(int(value))


class BadEntries:
    """Collects metadata entries dropped under --bad_data skip (or raises at the first under 'error')."""

    def __init__(self, source: Path, bad_data: str = "error"):
        if bad_data not in ("error", "skip"):
            raise ValueError(f"bad_data must be 'error' or 'skip', got {bad_data!r}")
        self.source, self.bad_data, self.messages = source, bad_data, []

    def drop(self, err: BadSampleError) -> None:
        if self.bad_data == "error":
            raise err
        logger.warning("skipped (--bad_data skip): %s", err)
        self.messages.append(str(err))

    def report(self) -> None:
        if self.messages:
            logger.warning("%s: %d malformed entries skipped (--bad_data skip)", self.source, len(self.messages))


def _parse_expression(exp: Any, where: str) -> dict[str, str]:
    text = _field(exp, "exp", str, where)
    if not text.strip():
        raise BadSampleError(f"{where}: field 'exp' is empty")
    return {"exp": text, "obj_id": _as_object_id(_field(exp, "obj_id", (str, int), where), f"{where}['obj_id']")}


def _parse_video(video: str, entry: Any, where: str, bad: BadEntries) -> dict[str, Any]:
    checked_name(video, f"{where} (video id)")
    frames = _field(entry, "frames", list, where)
    if not frames:
        raise BadSampleError(f"{where}: field 'frames' is empty (a video without frames)")
    for name in frames:
        checked_name(name, f"{where}['frames']")
    expressions = {}
    for exp_id, exp in _field(entry, "expressions", dict, where).items():
        exp_where = f"{where}['expressions']['{exp_id}']"
        try:
            expressions[checked_name(str(exp_id), f"{exp_where} (expression id)")] = \
                _parse_expression(exp, exp_where)
        except BadSampleError as err:
            bad.drop(err)
    return {"frames": sorted(frames), "expressions": expressions}


def load_meta_expressions(path: Path, bad_data: str = "error") -> dict[str, dict[str, Any]]:
    """Validated meta_expressions.json -> {video: {"frames": sorted names, "expressions": {id: {exp, obj_id}}}}.

    Errors name the file and the field. With bad_data='skip' a malformed video or expression entry is dropped
    with a warning instead (a file that is not JSON or has no 'videos' always stops).
    """
    bad = BadEntries(path, bad_data)
    parsed: dict[str, dict[str, Any]] = {}
    for video, entry, where in _video_entries(path):
        try:
            parsed[video] = _parse_video(video, entry, where, bad)
        except BadSampleError as err:
            bad.drop(err)
    bad.report()
    return parsed


def load_object_categories(path: Path, bad_data: str = "error") -> dict[str, dict[str, str]]:
    """meta.json -> {video: {obj_id: category name}} (malformed videos dropped with a warning under 'skip')."""
    bad = BadEntries(path, bad_data)
    categories: dict[str, dict[str, str]] = {}
    for video, entry, where in _video_entries(path):
        try:
            objects = _field(entry, "objects", dict, where)
            categories[video] = {_as_object_id(oid, f"{where}['objects']"):
                                 _field(obj, "category", str, f"{where}['objects']['{oid}']")
                                 for oid, obj in objects.items()}
        except ValueError as err:
            bad.drop(BadSampleError(str(err)))
    bad.report()
    return categories


def _decode(path: Path, kind: str) -> Image.Image:
    """Open and fully decode an image file; missing, truncated or corrupt files raise errors naming it."""
    if not path.is_file():
        raise MissingFileError(f"{kind} not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadSampleError(f"{path}: cannot decode the {kind} ({type(err).__name__}: {err})") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: grayscale is replicated, alpha dropped, 16-bit/int/float scaled to 0-255."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def load_frame(path: Path) -> Image.Image:
    """An 8-bit RGB frame whatever the file's mode; errors name the file."""
    return to_rgb(_decode(path, "frame"))


LABEL_MODES = ("P", "L", "I", "I;16", "I;16L", "I;16B", "1")


def load_label_map(path: Path, frame_size: Optional[tuple[int, int]] = None, frame_path: Optional[Path] = None,
                   ) -> np.ndarray:
    """The object-id map of a palette annotation PNG as an integer array [H, W].

    `frame_size` (W, H) of the matching frame, when given, must equal the annotation's size.
    """
    image = _decode(path, "annotation")
    if image.mode not in LABEL_MODES:
        raise BadSampleError(f"{path}: expected a palette ('P') PNG of object ids, got mode {image.mode} "
                             "(colour-coded masks must be converted to id maps first)")
    if frame_size is not None and image.size != tuple(frame_size):
        raise BadSampleError(f"{path}: annotation is {image.size[0]}x{image.size[1]} (WxH) but its frame "
                             f"{frame_path or ''} is {frame_size[0]}x{frame_size[1]}")
    labels = np.array(image)
    return labels.astype(np.uint8) if labels.dtype == bool else labels


def check_same_size(frames: list[Image.Image], paths: list[Path]) -> None:
    """Every frame of a clip must have the size of the first one."""
    for frame, path in zip(frames[1:], paths[1:]):
        if frame.size != frames[0].size:
            raise BadSampleError(f"{path}: frame is {frame.size[0]}x{frame.size[1]} (WxH), but {paths[0]} of the "
                                 f"same video is {frames[0].size[0]}x{frames[0].size[1]}")


def mask_box_xyxy(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """Tight box (x1, y1, x2, y2) of a binary mask with x2/y2 the last set column/row; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def sample_clip_indices(anchor: int, video_len: int, num_frames: int,
                        rng: random.Random | ModuleType = random) -> list[int]:
    """Frame indices of one training clip (spec 5.2), sorted; duplicates are possible.

    `rng` is a random.Random or the `random` module itself (the default, seeded per DataLoader worker).

    The anchor; for T > 1 one local frame 1-3 before and one 1-3 after (clamped to the video); for
    T > 3 the remaining T - 3 "global" frames without replacement from outside [min, max] of the
    local set (the max itself stays eligible), else from the whole video, else (video shorter than
    needed) every frame plus a random subset, cycling. T = 2 keeps the first two of the sorted triple.
    """
    indices = [anchor]
    if num_frames > 1:
        before, after = rng.randint(1, 3), rng.randint(1, 3)
        indices += [max(0, anchor - before), min(video_len - 1, anchor + after)]
    if num_frames > 3:
        needed = num_frames - len(indices)
        pool = list(range(min(indices))) + list(range(max(indices), video_len))
        if len(pool) > needed:
            indices += rng.sample(pool, needed)
        elif video_len >= needed:
            indices += rng.sample(range(video_len), needed)
        else:
            indices += list(range(video_len)) * (needed // video_len)
            indices += rng.sample(range(video_len), needed % video_len)
    return sorted(indices)[:num_frames]


# Per-object target fields stacked along the first dimension (T rows per object) while transforming.
OBJECT_ROW_FIELDS = ("labels", "boxes", "masks", "valid")


class YTVOSDataset(Dataset):
    """Training clips of Ref-YouTube-VOS-format data: one sample per (video, expression, anchor).

    Anchors are range(0, len(frames), num_frames). Each item is (imgs [T, 3, h, w], target) with the
    target keys of spec 4.1 plus 'video_id' and 'exp_id'. If no frame is valid after augmentation
    another random sample is drawn, as in the reference, unless the referred object id occurs in none of
    the video's annotations: that is a data error (BadSampleError naming the video, expression and ids).
    ``bad_data='skip'`` drops malformed metadata entries with a warning instead of stopping.

    ``expressions_per_clip`` = K > 1 adds to the target ``companions``: up to K - 1 targets of expressions
    that refer to other objects of the same video (one expression per object, objects drawn at random),
    on the same frames under the same augmentation. The model then reads the clip once for K expressions,
    and each step contrasts the sentences of one scene. Companions with no valid frame are dropped.
    """

    def __init__(self, img_folder: Path, ann_file: Path, transforms: Callable, num_frames: int = 5,
                 categories: Mapping[str, int] = YTVOS_CATEGORIES, bad_data: str = "error",
                 expressions_per_clip: int = 1):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if expressions_per_clip < 1:
            raise ValueError(f"expressions_per_clip must be >= 1, got {expressions_per_clip}")
        self.expressions_per_clip = expressions_per_clip
        self.img_folder = Path(img_folder)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.num_frames = num_frames
        self.categories = dict(categories)
        self.bad_data = bad_data
        self.samples = self._build_index()
        self._expressions_by_object = self._index_objects() if expressions_per_clip > 1 else {}
        self._object_ids: dict[str, set[int]] = {}
        logger.info("%s: %d videos, %d clips", self.ann_file, len({s["video"] for s in self.samples}),
                    len(self.samples))

    def _build_index(self) -> list[dict[str, Any]]:
        expressions = load_meta_expressions(self.ann_file, self.bad_data)
        meta_path = self.img_folder / "meta.json"
        objects = load_object_categories(meta_path, self.bad_data)
        bad = BadEntries(meta_path, self.bad_data)
        samples = []
        for video, entry in expressions.items():
            for exp_id, exp in entry["expressions"].items():
                try:
                    category = self._category(objects, meta_path, video, exp["obj_id"])
                except BadSampleError as err:
                    bad.drop(err)
                    continue
                for anchor in range(0, len(entry["frames"]), self.num_frames):
                    samples.append({"video": video, "exp_id": exp_id, "caption": exp["exp"],
                                    "obj_id": int(exp["obj_id"]), "category_id": category,
                                    "frames": entry["frames"], "anchor": anchor})
        bad.report()
        return samples

    def _index_objects(self) -> dict[str, dict[int, list[dict[str, Any]]]]:
        """video -> object id -> its expressions (exp_id, caption, category_id), for companion draws."""
        index: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
        for sample in self.samples:
            by_exp = index.setdefault(sample["video"], {}).setdefault(sample["obj_id"], {})
            by_exp[sample["exp_id"]] = {"exp_id": sample["exp_id"], "caption": sample["caption"],
                                        "category_id": sample["category_id"]}
        return {video: {obj: list(exps.values()) for obj, exps in objs.items()} for video, objs in index.items()}

    def draw_companions(self, sample: dict[str, Any]) -> list[dict[str, Any]]:
        """Up to K - 1 expressions of other objects of the sample's video, one per object, drawn at random."""
        others = sorted(obj for obj in self._expressions_by_object[sample["video"]] if obj != sample["obj_id"])
        chosen = random.sample(others, min(self.expressions_per_clip - 1, len(others)))
        return [dict(random.choice(self._expressions_by_object[sample["video"]][obj]), obj_id=obj)
                for obj in chosen]

    def _category(self, objects: dict, meta_path: Path, video: str, obj_id: str) -> int:
        try:
            name = objects[video][obj_id]
        except KeyError:
            raise BadSampleError(f"{meta_path}: no object '{obj_id}' for video '{video}' "
                                 f"(referenced by {self.ann_file})") from None
        if name not in self.categories:
            raise BadSampleError(f"{meta_path}: video '{video}' object '{obj_id}' has category '{name}', "
                                 f"not in the category table ({len(self.categories)} names)")
        return self.categories[name]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        return first_visible_sample(self.load_clip, idx, len(self), str(self.ann_file), self.check_object_occurs)

    def _frame_paths(self, video: str, name: str) -> tuple[Path, Path]:
        return (self.img_folder / "JPEGImages" / video / f"{name}.jpg",
                self.img_folder / "Annotations" / video / f"{name}.png")

    def check_object_occurs(self, idx: int) -> None:
        """Raise BadSampleError if sample idx's object id is absent from every annotation of its video."""
        sample = self.samples[idx]
        video = sample["video"]
        if video not in self._object_ids:
            present: set[int] = set()
            for name in sample["frames"]:
                present.update(np.unique(load_label_map(self._frame_paths(video, name)[1])).tolist())
            self._object_ids[video] = present
        if sample["obj_id"] not in self._object_ids[video]:
            ids = sorted(self._object_ids[video] - {0})
            raise BadSampleError(
                f"{self.ann_file}: videos['{video}']['expressions']['{sample['exp_id']}']['obj_id'] = "
                f"{sample['obj_id']} occurs in none of the {len(sample['frames'])} annotation PNGs of "
                f"{self.img_folder / 'Annotations' / video} (object ids present: {ids})")

    def load_clip(self, idx: int) -> tuple[Tensor, dict[str, Any]]:
        """Sample frame indices for sample `idx`, read frames and masks, and apply the transforms.

        The referred object's rows (and the companions', stacked after them) go through the transforms
        together, so every expression sees the same crop, flip and resize.
        """
        sample = self.samples[idx]
        frames = sample["frames"]
        indices = sample_clip_indices(sample["anchor"], len(frames), self.num_frames)
        companions = self.draw_companions(sample) if self.expressions_per_clip > 1 else []
        paths = [self._frame_paths(sample["video"], frames[index]) for index in indices]
        images = [load_frame(frame_path) for frame_path, _ in paths]
        check_same_size(images, [frame_path for frame_path, _ in paths])
        label_maps = [load_label_map(ann_path, image.size, frame_path)
                      for image, (frame_path, ann_path) in zip(images, paths)]
        referred = [sample] + companions
        rows = [object_rows(label_maps, entry["obj_id"], entry["category_id"]) for entry in referred]
        width, height = images[0].size
        target = {
            "frames_idx": torch.tensor(indices, dtype=torch.long),
            **{name: torch.cat([r[name] for r in rows]) for name in OBJECT_ROW_FIELDS},
            "caption": clean_caption(sample["caption"]),
            "orig_size": torch.tensor([height, width], dtype=torch.long),
            "size": torch.tensor([height, width], dtype=torch.long),
            "video_id": sample["video"],
            "exp_id": sample["exp_id"],
        }
        if self.expressions_per_clip > 1:
            target["companion_captions"] = [clean_caption(c["caption"]) for c in companions]
        imgs, target = self.transforms(images, target)
        target["valid"] = target["valid"].long()
        if self.expressions_per_clip > 1:
            target = split_companions(target, [c["exp_id"] for c in companions], len(indices))
        return imgs, target


def object_rows(label_maps: list[np.ndarray], obj_id: int, category_id: int) -> dict[str, Tensor]:
    """Per-frame labels [T], xyxy boxes [T, 4] (zeros where absent), masks [T, H, W] and valid [T] of one object."""
    masks, boxes, valid = [], [], []
    for labels in label_maps:
        mask = labels == obj_id
        box = mask_box_xyxy(mask)
        boxes.append(box or (0, 0, 0, 0))
        valid.append(box is not None)
        masks.append(torch.from_numpy(mask.astype(np.float32)))
    return {"labels": torch.full((len(label_maps),), category_id, dtype=torch.long),
            "boxes": torch.tensor(boxes, dtype=torch.float32), "masks": torch.stack(masks),
            "valid": torch.tensor(valid, dtype=torch.long)}


def split_companions(target: dict[str, Any], companion_exp_ids: list[str], num_frames: int) -> dict[str, Any]:
    """Cut the stacked object rows of a transformed target into the referred object's target and the
    companions' (``target['companions']``, those with at least one valid frame)."""
    captions = target.pop("companion_captions")
    parts = {name: target[name].split(num_frames) for name in OBJECT_ROW_FIELDS}
    target.update({name: rows[0] for name, rows in parts.items()})
    shared = {k: v for k, v in target.items() if k not in OBJECT_ROW_FIELDS + ("caption", "exp_id")}
    companions = []
    for i, (exp_id, caption) in enumerate(zip(companion_exp_ids, captions), start=1):
        if bool(parts["valid"][i].any()):
            companions.append({**shared, **{name: rows[i] for name, rows in parts.items()},
                               "caption": caption, "exp_id": exp_id})
    target["companions"] = companions
    return target


class VideoExpressionSet(Dataset):
    """Every (video, expression) of a split with all of the video's frames, for inference/scoring.

    Item: dict(video_id, exp_id, obj_id, caption (raw, as the reference inference uses it),
    frame_names, frames [T, 3, h, w] (eval transform), orig_size (H, W), size (h, w), gt_masks
    (uint8 [T, H, W], 1 where the annotation equals obj_id; None without <split>/Annotations/<video>)).
    Videos are sorted; the last decoded video is cached, so keep a video's expressions in one worker
    (the eval sampler of datasets.samplers splits contiguously). For split 'valid', videos listed in
    meta_expressions/test are dropped as the reference inference does (their frames are not released).
    Video ids, expression ids and frame names are validated as safe path components on load.
    """

    def __init__(self, root: Path, split: str, transform: Callable, exclude_test: bool = True,
                 bad_data: str = "error"):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.ann_file = self.root / "meta_expressions" / split / "meta_expressions.json"
        self.videos = load_meta_expressions(self.ann_file, bad_data)
        if split == "valid" and exclude_test:
            self._drop_test_videos()
        self.items = [(video, exp_id) for video in sorted(self.videos)
                      for exp_id in self.videos[video]["expressions"]]
        self._cache: Optional[tuple[str, dict[str, Any]]] = None
        logger.info("%s: %d videos, %d expressions", self.ann_file, len(self.videos), len(self.items))

    def _drop_test_videos(self) -> None:
        test_file = self.root / "meta_expressions" / "test" / "meta_expressions.json"
        if test_file.is_file():
            test_videos = set(_field(read_json(test_file), "videos", dict, str(test_file)))
            self.videos = {v: e for v, e in self.videos.items() if v not in test_videos}
            logger.info("dropped the videos of %s from %s", test_file, self.ann_file)

    def __len__(self) -> int:
        return len(self.items)

    def load_video(self, video: str) -> dict[str, Any]:
        """Transformed frames and raw label maps of one video (cached: the last video only)."""
        if self._cache is not None and self._cache[0] == video:
            return self._cache[1]
        names = self.videos[video]["frames"]
        split_dir = self.root / self.split
        frame_paths = [split_dir / "JPEGImages" / video / f"{name}.jpg" for name in names]
        frames = [load_frame(path) for path in frame_paths]
        check_same_size(frames, frame_paths)
        width, height = frames[0].size
        clip, target = self.transform(frames, {})
        ann_dir = split_dir / "Annotations" / video
        labels = None
        if ann_dir.is_dir():
            labels = np.stack([load_label_map(ann_dir / f"{n}.png", (width, height), path)
                               for n, path in zip(names, frame_paths)])
        data = {"frames": clip, "orig_size": (height, width), "size": tuple(int(s) for s in clip.shape[-2:]),
                "labels": labels, "frame_names": list(names)}
        self._cache = (video, data)
        return data

    def __getitem__(self, idx: int) -> dict[str, Any]:
        video, exp_id = self.items[idx]
        exp = self.videos[video]["expressions"][exp_id]
        data = self.load_video(video)
        obj_id = int(exp["obj_id"])
        gt_masks = None if data["labels"] is None else (data["labels"] == obj_id).astype(np.uint8)
        return {"video_id": video, "exp_id": exp_id, "obj_id": obj_id, "caption": exp["exp"],
                "frame_names": data["frame_names"], "frames": data["frames"], "orig_size": data["orig_size"],
                "size": data["size"], "gt_masks": gt_masks}


def transforms_from_args(image_set: str, args: Namespace) -> Callable:
    """The video transform configured by the shared data flags of opts.py."""
    return make_video_transforms(
        image_set, train_short_sides=list(args.train_short_sides), max_size=args.max_size,
        crop_short_sides=list(args.crop_short_sides), crop_range=tuple(args.crop_range),
        eval_short_side=args.eval_short_side, photometric=not args.no_photometric,
        eval_max_size=getattr(args, "eval_max_size", None))


def build_ytvos_split(root: Path, image_set: str, args: Namespace,
                      categories: Mapping[str, int] = YTVOS_CATEGORIES) -> Dataset:
    """'train' -> YTVOSDataset on root/train; 'val'/'valid'/'test' -> VideoExpressionSet of that split.

    args.bad_data ('error' or 'skip', see util/run_flags.py) decides what malformed metadata entries do.
    """
    root = Path(root)
    bad_data = getattr(args, "bad_data", "error")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if image_set == "train":
        return YTVOSDataset(root / "train", root / "meta_expressions" / "train" / "meta_expressions.json",
                            transforms_from_args("train", args), num_frames=args.num_frames, categories=categories,
                            bad_data=bad_data, expressions_per_clip=getattr(args, "expressions_per_clip", 1))
    if image_set in ("val", "valid", "test"):
        split = "valid" if image_set == "val" else image_set
        return VideoExpressionSet(root, split, transforms_from_args(split, args), bad_data=bad_data)
    raise ValueError(f"unknown image_set {image_set!r}; expected 'train', 'val', 'valid' or 'test'")


@register_dataset("ytvos")
def build_ytvos(image_set: str, args: Namespace) -> Dataset:
    """Ref-YouTube-VOS from args.ytvos_path."""
    return build_ytvos_split(Path(args.ytvos_path), image_set, args)


def scored_split(image_set: str, args: Namespace, root: Path) -> Optional[Dataset]:
    """The evaluation split if its videos have ground-truth annotations (our synthetic valid, a held-out train)."""
    split = "valid" if image_set in ("val", "valid") else image_set
    if not (Path(root) / split / "Annotations").is_dir():
        return None
    return build_ytvos_split(Path(root), split, args)


def evaluate_ytvos_format(root: Path, model: Any, postprocessors: dict, args: Namespace, device: Any,
                          **kwargs: Any) -> Optional[dict[str, Any]]:
    """J, F and J&F per expression (DAVIS definitions) on an annotated Ref-YTVOS-format split; None without GT."""
    from engine import evaluate_video_expressions

    dataset = scored_split(getattr(args, "eval_split", "valid"), args, root)
    if dataset is None:
        return None
    return evaluate_video_expressions(model, postprocessors, dataset, device, max_items=args.max_eval_expressions,
                                      amp=getattr(args, "amp", "none"), **kwargs)


@register_evaluator("ytvos")
def evaluate_ytvos(model: Any, postprocessors: dict, args: Namespace, device: Any,
                   **kwargs: Any) -> Optional[dict[str, Any]]:
    """Local scoring of Ref-YTVOS is possible only for an annotated split (the official valid is scored online)."""
    return evaluate_ytvos_format(Path(args.ytvos_path), model, postprocessors, args, device, **kwargs)
