"""Synthetic referring-video dataset written in the Ref-YouTube-VOS layout.

Each video shows 2-4 flat-coloured shapes on a plain or lightly textured background. Objects differ
by colour, shape, size (small/large) and motion (still, or moving left/right/up/down); they move in
straight lines, may leave the frame, and occlude each other in a fixed order (higher id on top).
Every expression names the smallest set of attributes that picks out its object among the video's
objects, optionally with one redundant true attribute ("the small red circle"); position words are
relational ("the circle on the left" = the left one among the circles, with a margin in every
frame). In about a fifth of the videos two objects share colour, shape and size and differ only
in motion, so their expressions need the motion words. All randomness flows from
``SyntheticConfig.seed``; video k of a split does not depend on how many videos are generated.

The dataset is read by the same code as real data (datasets/ytvos.py). Unlike Ref-YTVOS, the
synthetic valid split has Annotations, and ``synthetic_info.json`` at the root records every
object's attributes and trajectory and every expression's attribute set.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from datasets import register_dataset, register_evaluator
from datasets.ytvos import build_ytvos_split, evaluate_ytvos_format

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INFO_FILE = "synthetic_info.json"
SPLITS = ("train", "valid")
CATEGORY = "others"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35), "green": (35, 175, 60), "blue": (45, 85, 235),
    "yellow": (240, 215, 35), "purple": (150, 55, 200), "white": (242, 242, 242),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
DIRECTIONS = ("left", "right", "up", "down")
MOTIONS = ("still",) + DIRECTIONS
POSITIONS = ("left", "right", "top", "bottom")
INTRINSIC = ("colour", "shape", "size", "motion")
# Relative weight of an attribute when several smallest distinguishing sets exist.
ATTRIBUTE_PREFERENCE = {"colour": 1.0, "shape": 1.0, "size": 1.0, "motion": 0.35, "position": 0.6}

# Geometry, as fractions of the shorter frame side S.
RADIUS_RANGE = {"small": (0.085, 0.11), "large": (0.17, 0.21)}
TRAVEL_RANGE = (0.3, 0.55)        # distance covered over the video by a moving object
EXIT_TRAVEL_RANGE = (0.45, 0.7)   # same, for objects that leave the frame
POSITION_MARGIN = 0.12            # "on the left" needs this gap to every competitor in every frame
TWIN_SEPARATION = 0.3             # gap between position twins along their axis
MIN_GAP = 0.8                     # centre distance >= MIN_GAP * (r_i + r_j) in every frame
MIN_VISIBLE_AREA = 0.002          # of H*W, for a frame to count as showing the object
_VELOCITY = {"still": (0.0, 0.0), "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
GENERIC_NOUNS = ("object", "shape", "thing")
MOTION_PHRASES = {
    "left": ("moving to the left", "moving left", "that moves to the left", "going left", "heading left"),
    "right": ("moving to the right", "moving right", "that moves to the right", "going right", "heading right"),
    "up": ("moving up", "moving upwards", "that moves up", "going up", "rising"),
    "down": ("moving down", "moving downwards", "that moves down", "going down", "falling"),
    "still": ("that is not moving", "standing still", "that stays still", "which does not move",
              "staying in place"),
}
POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
}
POSITION_SUPERLATIVES = {
    "left": ("leftmost",), "right": ("rightmost",), "top": ("topmost", "uppermost", "highest"),
    "bottom": ("bottommost", "lowest"),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated dataset."""

    seed: int = 0
    train_videos: int = 300
    valid_videos: int = 60
    frames: int = 10
    height: int = 96
    width: int = 96
    min_objects: int = 2
    max_objects: int = 4
    p_twin_motion: float = 0.18     # videos with two objects that differ only in motion
    p_twin_position: float = 0.1    # videos with two identical objects told apart by position
    p_exit: float = 0.2             # chance that a moving object is set to leave the frame
    p_two_expressions: float = 0.5  # chance that an object gets a second expression
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError(f"SyntheticConfig.frames must be >= 2, got {self.frames}")
        if min(self.height, self.width) < 32:
            raise ValueError(f"SyntheticConfig: frames must be at least 32x32, got {self.height}x{self.width}")
        if not 2 <= self.min_objects <= self.max_objects <= 6:
            raise ValueError("SyntheticConfig: need 2 <= min_objects <= max_objects <= 6")
        if self.train_videos < 0 or self.valid_videos < 0:
            raise ValueError("SyntheticConfig: video counts must be >= 0")


@dataclass
class SynthObject:
    """One shape: intrinsic attributes, radius in pixels and its centre in every frame."""

    obj_id: int
    colour: str
    shape: str
    size: str
    motion: str
    radius: float
    centres: np.ndarray  # [frames, 2] (x, y) float pixels, may lie outside the frame

    def attributes(self) -> dict[str, str]:
        return {"colour": self.colour, "shape": self.shape, "size": self.size, "motion": self.motion}


@dataclass
class SynthExpression:
    """A referring expression: the attribute set it states and its text."""

    exp_id: str
    obj_id: int
    attrs: dict[str, str]
    text: str
    motion_required: bool  # another object shares colour, shape and size and no position is stated


@dataclass
class SynthVideo:
    video_id: str
    objects: list[SynthObject]
    expressions: list[SynthExpression] = field(default_factory=list)
    labels: Optional[np.ndarray] = None      # [frames, H, W] uint8 object ids
    images: Optional[np.ndarray] = None      # [frames, H, W, 3] uint8 RGB


# ----------------------------------------------------------------------------------------------
# Referring semantics
# ----------------------------------------------------------------------------------------------

def is_extreme(obj: SynthObject, others: Sequence[SynthObject], position: str, margin: float) -> bool:
    """Whether `obj` is beyond every other object towards `position` by `margin` px in every frame."""
    axis = 0 if position in ("left", "right") else 1
    sign = -1.0 if position in ("left", "top") else 1.0
    mine = obj.centres[:, axis] * sign
    return all(bool(np.all(mine >= other.centres[:, axis] * sign + margin)) for other in others
               if other is not obj)


def matching_objects(attrs: dict[str, str], objects: Sequence[SynthObject], margin: float) -> list[int]:
    """Ids of the objects an attribute set describes.

    Intrinsic attributes filter the objects; a 'position' then keeps the candidates that are extreme
    in that direction among the remaining candidates (relational reading of "the X on the left").
    """
    candidates = [o for o in objects
                  if all(getattr(o, key) == value for key, value in attrs.items() if key != "position")]
    if "position" in attrs:
        candidates = [o for o in candidates if is_extreme(o, candidates, attrs["position"], margin)]
    return [o.obj_id for o in candidates]


def _attribute_sets(obj: SynthObject, allow_position: bool) -> list[dict[str, str]]:
    """All attribute sets of size 1-3 that are true of `obj` (at most one position)."""
    own = obj.attributes()
    sets = [{k: own[k] for k in keys} for n in (1, 2, 3) for keys in itertools.combinations(INTRINSIC, n)]
    if allow_position:
        for position in POSITIONS:
            sets.append({"position": position})
            sets += [{k: own[k] for k in keys} | {"position": position}
                     for n in (1, 2) for keys in itertools.combinations(INTRINSIC, n)]
    return sets


def has_twin(obj: SynthObject, objects: Sequence[SynthObject]) -> bool:
    """Whether another object has the same colour, shape and size (only motion/position can tell)."""
    return any(o is not obj and (o.colour, o.shape, o.size) == (obj.colour, obj.shape, obj.size)
               for o in objects)


def distinguishing_sets(obj: SynthObject, objects: Sequence[SynthObject], margin: float) -> list[dict[str, str]]:
    """The smallest attribute sets that identify `obj` alone.

    Objects whose only intrinsic difference from a twin is motion are not described by position, so
    that their expressions exercise motion words.
    """
    motion_twin = any(o is not obj and (o.colour, o.shape, o.size) == (obj.colour, obj.shape, obj.size)
                      and o.motion != obj.motion for o in objects)
    unique = [s for s in _attribute_sets(obj, allow_position=not motion_twin)
              if matching_objects(s, objects, margin) == [obj.obj_id]]
    if not unique:
        return []
    smallest = min(len(s) for s in unique)
    return [s for s in unique if len(s) == smallest]


# ----------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------

def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def expression_text(attrs: dict[str, str], rng: np.random.Generator) -> str:
    """Render an attribute set as an English noun phrase with varied templates."""
    position = attrs.get("position")
    superlative = position is not None and rng.random() < 0.35
    determiner = "the" if superlative or position is not None or rng.random() < 0.75 else "a"
    words = [determiner]
    if superlative:
        words.append(_pick(rng, POSITION_SUPERLATIVES[position]))
    if "size" in attrs:
        words.append(_pick(rng, SIZE_WORDS[attrs["size"]]))
    if "colour" in attrs:
        words.append(attrs["colour"])
    words.append(attrs["shape"] if "shape" in attrs else _pick(rng, GENERIC_NOUNS))
    if position is not None and not superlative:
        words.append(_pick(rng, POSITION_PHRASES[position]))
    if "motion" in attrs:
        words.append(_pick(rng, MOTION_PHRASES[attrs["motion"]]))
    if determiner == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def _with_extra_attribute(attrs: dict[str, str], obj: SynthObject, rng: np.random.Generator) -> dict[str, str]:
    """Sometimes add a redundant true shape or colour ("the red one" -> "the red circle")."""
    attrs = dict(attrs)
    if "shape" not in attrs and rng.random() < 0.3:
        attrs["shape"] = obj.shape
    elif "colour" not in attrs and rng.random() < 0.15:
        attrs["colour"] = obj.colour
    return attrs


def _preference(attrs: dict[str, str]) -> float:
    """Sampling weight of a distinguishing set: appearance words first, motion and position less often."""
    return float(np.prod([ATTRIBUTE_PREFERENCE[key] for key in attrs]))


def make_expressions(objects: Sequence[SynthObject], rng: np.random.Generator, cfg: SyntheticConfig,
                     margin: float) -> list[SynthExpression]:
    """One or two expressions per object, each identifying it alone."""
    expressions: list[SynthExpression] = []
    for obj in objects:
        options = distinguishing_sets(obj, objects, margin)
        count = 2 if rng.random() < cfg.p_two_expressions else 1
        weights = np.array([_preference(s) for s in options])
        order = rng.choice(len(options), size=min(count, len(options)), replace=False, p=weights / weights.sum())
        for k in range(count):
            attrs = _with_extra_attribute(options[int(order[k % len(order)])], obj, rng)
            if matching_objects(attrs, objects, margin) != [obj.obj_id]:
                raise RuntimeError(f"internal error: expression {attrs} does not identify object {obj.obj_id}")
            expressions.append(SynthExpression(
                exp_id=str(len(expressions)), obj_id=obj.obj_id, attrs=attrs, text=expression_text(attrs, rng),
                motion_required=has_twin(obj, objects) and "position" not in attrs))
    return expressions


# ----------------------------------------------------------------------------------------------
# Scene sampling
# ----------------------------------------------------------------------------------------------

def _sample_attributes(rng: np.random.Generator, count: int, cfg: SyntheticConfig) -> list[dict[str, str]]:
    """Intrinsic attributes of every object, with the twin scenarios mixed in."""
    def random_motion() -> str:
        return "still" if rng.random() < 0.4 else _pick(rng, DIRECTIONS)

    objects = [{"colour": _pick(rng, tuple(COLOURS)), "shape": _pick(rng, SHAPES), "size": _pick(rng, SIZES),
                "motion": random_motion()} for _ in range(count)]
    scenario = rng.random()
    first, second = (int(i) for i in rng.choice(count, size=2, replace=False))
    if scenario < cfg.p_twin_motion:
        motions = rng.choice(MOTIONS, size=2, replace=False)
        objects[second] = dict(objects[first], motion=str(motions[1]))
        objects[first]["motion"] = str(motions[0])
    elif scenario < cfg.p_twin_motion + cfg.p_twin_position:
        objects[second] = dict(objects[first])
    return objects


def _trajectory(rng: np.random.Generator, motion: str, radius: float, cfg: SyntheticConfig) -> np.ndarray:
    """Centres [frames, 2] of a straight, constant-speed path (possibly leaving the frame)."""
    width, height, side = cfg.width, cfg.height, min(cfg.width, cfg.height)
    start = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
    velocity = np.array(_VELOCITY[motion])
    if motion != "still":
        axis = 0 if motion in ("left", "right") else 1
        extent = (width, height)[axis]
        forward = velocity[axis] > 0
        if rng.random() < cfg.p_exit:
            travel = rng.uniform(*EXIT_TRAVEL_RANGE) * side
            beyond = rng.uniform(-0.5, 1.3) * radius
            end = extent + beyond if forward else -beyond
            start[axis] = float(np.clip(end - travel if forward else end + travel, radius, extent - radius))
            travel = abs(end - start[axis])
        else:
            travel = min(rng.uniform(*TRAVEL_RANGE) * side, extent - 2 * radius - 1)
            low = radius if forward else radius + travel
            start[axis] = rng.uniform(low, low + extent - 2 * radius - travel)
        velocity = velocity * travel / (cfg.frames - 1)
    steps = np.arange(cfg.frames, dtype=np.float64)[:, None]
    return start[None, :] + steps * velocity[None, :]


def _far_enough(centres: np.ndarray, radius: float, placed: Sequence[SynthObject]) -> bool:
    return all(bool(np.all(np.linalg.norm(centres - o.centres, axis=1) >= MIN_GAP * (radius + o.radius)))
               for o in placed)


def _twins_separated(objects: Sequence[SynthObject], side: float) -> bool:
    """Identical objects (same colour, shape, size and motion) must be apart along x or y."""
    for a, b in itertools.combinations(objects, 2):
        if a.attributes() == b.attributes():
            gap = np.abs(a.centres - b.centres).min(axis=0)
            if gap.max() < TWIN_SEPARATION * side:
                return False
    return True


def _place_objects(rng: np.random.Generator, attributes: list[dict[str, str]],
                   cfg: SyntheticConfig) -> Optional[list[SynthObject]]:
    """Sample radii and paths with limited overlap; None when the scene cannot be packed."""
    side = min(cfg.width, cfg.height)
    placed: list[SynthObject] = []
    for obj_id, attrs in enumerate(attributes, start=1):
        radius = rng.uniform(*RADIUS_RANGE[attrs["size"]]) * side
        for _ in range(60):
            centres = _trajectory(rng, attrs["motion"], radius, cfg)
            if _far_enough(centres, radius, placed):
                placed.append(SynthObject(obj_id=obj_id, radius=float(radius), centres=centres, **attrs))
                break
        else:
            return None
    return placed if _twins_separated(placed, side) else None


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def shape_polygon(shape: str, centre: np.ndarray, radius: float) -> Optional[np.ndarray]:
    """Vertices (x, y) of a square or an upward triangle of size `radius`; None for circles."""
    cx, cy = centre
    if shape == "square":
        half = 0.88 * radius
        return np.array([[cx - half, cy - half], [cx + half, cy - half],
                         [cx + half, cy + half], [cx - half, cy + half]])
    if shape == "triangle":
        big = 1.2 * radius
        dx, dy = big * np.sqrt(3.0) / 2.0, big / 2.0
        return np.array([[cx, cy - big], [cx + dx, cy + dy], [cx - dx, cy + dy]])
    return None


_SUBPIXEL_BITS = 4


def draw_label(canvas: np.ndarray, obj: SynthObject, frame: int) -> None:
    """Paint object `obj` (value obj_id) into the uint8 label map `canvas` at frame `frame`."""
    scale = 1 << _SUBPIXEL_BITS
    centre = obj.centres[frame]
    polygon = shape_polygon(obj.shape, centre, obj.radius)
    if polygon is None:
        cv2.circle(canvas, tuple(int(round(v * scale)) for v in centre), int(round(obj.radius * scale)),
                   obj.obj_id, -1, cv2.LINE_8, _SUBPIXEL_BITS)
    else:
        cv2.fillPoly(canvas, [np.round(polygon * scale).astype(np.int32)], obj.obj_id, cv2.LINE_8, _SUBPIXEL_BITS)


def render_labels(objects: Sequence[SynthObject], cfg: SyntheticConfig) -> np.ndarray:
    """Object-id maps [frames, H, W] uint8; later objects are drawn over earlier ones."""
    labels = np.zeros((cfg.frames, cfg.height, cfg.width), dtype=np.uint8)
    for frame in range(cfg.frames):
        for obj in objects:
            draw_label(labels[frame], obj, frame)
    return labels


def make_background(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """A muted plain, gradient, blotchy or striped background [H, W, 3] float32."""
    height, width = cfg.height, cfg.width
    grey = rng.uniform(60, 150)
    base = np.clip(grey + rng.uniform(-20, 20, size=3), 0, 255).astype(np.float32)
    kind = rng.random()
    if kind < 0.35:
        texture = np.zeros((height, width), np.float32)
    elif kind < 0.6:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        texture = (ramp - ramp.mean()) * rng.uniform(15, 30)
    elif kind < 0.8:
        coarse = rng.normal(0, 1, size=(6, 6)).astype(np.float32)
        texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(4, 8)
    else:
        period = rng.uniform(8, 16)
        xx = np.arange(width if rng.random() < 0.5 else height, dtype=np.float32)
        stripes = np.sin(2 * np.pi * xx / period) * rng.uniform(3, 6)
        texture = np.broadcast_to(stripes[None, :] if len(xx) == width else stripes[:, None], (height, width))
    return base[None, None, :] + texture[:, :, None]


def render_images(labels: np.ndarray, objects: Sequence[SynthObject], rng: np.random.Generator,
                  cfg: SyntheticConfig) -> np.ndarray:
    """RGB frames [frames, H, W, 3] uint8: background, flat-coloured objects, mild sensor noise."""
    background = make_background(rng, cfg)
    images = np.repeat(background[None], cfg.frames, axis=0)
    for obj in objects:
        jitter = rng.uniform(-12, 12, size=3) if obj.colour != "white" else rng.uniform(-12, 0, size=3)
        colour = np.clip(np.array(COLOURS[obj.colour], np.float32) + jitter, 0, 255)
        images[labels == obj.obj_id] = colour
    images += rng.standard_normal(size=images.shape, dtype=np.float32) * 2.0
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _visible_enough(labels: np.ndarray, objects: Sequence[SynthObject], cfg: SyntheticConfig) -> bool:
    """Every object shows a minimum area in at least 40% of the frames (and two frames)."""
    min_area = MIN_VISIBLE_AREA * cfg.height * cfg.width
    needed = max(2, int(np.ceil(0.4 * cfg.frames)))
    return all(int(((labels == o.obj_id).sum(axis=(1, 2)) >= min_area).sum()) >= needed for o in objects)


def generate_video(cfg: SyntheticConfig, split: str, index: int, render: bool = True) -> SynthVideo:
    """Video `index` of `split`: objects, expressions and (if render) frames and label maps."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
    margin = POSITION_MARGIN * min(cfg.width, cfg.height)
    video_id = f"{split}_{index:05d}"
    for _ in range(200):
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        objects = _place_objects(rng, _sample_attributes(rng, count, cfg), cfg)
        if objects is None or not all(distinguishing_sets(o, objects, margin) for o in objects):
            continue
        labels = render_labels(objects, cfg)
        if not _visible_enough(labels, objects, cfg):
            continue
        video = SynthVideo(video_id, objects, make_expressions(objects, rng, cfg, margin))
        if render:
            video.labels = labels
            video.images = render_images(labels, objects, rng, cfg)
        return video
    raise RuntimeError(f"could not lay out synthetic video {video_id} for {cfg}; frames too small?")


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------

def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS/YouTube-VOS annotation PNGs (PASCAL VOC colour map)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [r, g, b]
    return palette


def frame_names(count: int) -> list[str]:
    return [f"{i:05d}" for i in range(count)]


def write_video(split_dir: Path, video: SynthVideo, cfg: SyntheticConfig, palette: list[int]) -> None:
    """JPEG frames and palette-PNG annotations of one video."""
    jpeg_dir = split_dir / "JPEGImages" / video.video_id
    ann_dir = split_dir / "Annotations" / video.video_id
    jpeg_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    for name, image, labels in zip(frame_names(cfg.frames), video.images, video.labels):
        Image.fromarray(image).save(jpeg_dir / f"{name}.jpg", quality=cfg.jpeg_quality)
        annotation = Image.frombytes("P", (cfg.width, cfg.height), np.ascontiguousarray(labels).tobytes())
        annotation.putpalette(palette)
        annotation.save(ann_dir / f"{name}.png")


def _video_records(video: SynthVideo, cfg: SyntheticConfig) -> tuple[dict, dict, dict]:
    """meta.json, meta_expressions.json and synthetic_info.json entries of one video."""
    names = frame_names(cfg.frames)
    meta = {"objects": {str(o.obj_id): {"category": CATEGORY, "frames": [
        n for n, labels in zip(names, video.labels) if bool((labels == o.obj_id).any())]}
        for o in video.objects}}
    expressions = {"expressions": {e.exp_id: {"exp": e.text, "obj_id": str(e.obj_id)} for e in video.expressions},
                   "frames": names}
    info = {
        "objects": {str(o.obj_id): dict(o.attributes(), radius=round(o.radius, 3),
                                        centres=np.round(o.centres, 3).tolist()) for o in video.objects},
        "expressions": {e.exp_id: {"obj_id": str(e.obj_id), "attrs": e.attrs, "motion_required": e.motion_required}
                        for e in video.expressions},
    }
    return meta, expressions, info


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=False)


def summarize(info_videos: dict[str, dict]) -> dict[str, Any]:
    """Counts of videos/objects/expressions and the share of expressions using each attribute."""
    expressions = [e for v in info_videos.values() for e in v["expressions"].values()]
    total = max(len(expressions), 1)
    usage = {key: round(sum(key in e["attrs"] for e in expressions) / total, 3)
             for key in INTRINSIC + ("position",)}
    return {"videos": len(info_videos), "objects": sum(len(v["objects"]) for v in info_videos.values()),
            "expressions": len(expressions),
            "motion_required": round(sum(e["motion_required"] for e in expressions) / total, 3),
            "attribute_usage": usage}


def write_dataset(out: Path, cfg: SyntheticConfig) -> dict[str, Any]:
    """Generate the dataset into `out` atomically (temp dir + rename); returns summary statistics.

    Raises FileExistsError if `out` exists and is not empty (e.g. another process won the race).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        palette = davis_palette()
        info: dict[str, Any] = {"format": "synthetic-ref-ytvos", "version": FORMAT_VERSION,
                                "config": dataclasses.asdict(cfg), "splits": {}}
        for split in SPLITS:
            meta, expressions, split_info = {}, {}, {}
            for index in range(cfg.train_videos if split == "train" else cfg.valid_videos):
                video = generate_video(cfg, split, index)
                write_video(tmp / split, video, cfg, palette)
                meta[video.video_id], expressions[video.video_id], split_info[video.video_id] = \
                    _video_records(video, cfg)
            for sub in ("JPEGImages", "Annotations"):
                (tmp / split / sub).mkdir(parents=True, exist_ok=True)
            _write_json(tmp / split / "meta.json", {"videos": meta})
            _write_json(tmp / "meta_expressions" / split / "meta_expressions.json", {"videos": expressions})
            info["splits"][split] = {"summary": summarize(split_info), "videos": split_info}
        _write_json(tmp / INFO_FILE, info)
        os.rename(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if out.is_dir() and any(out.iterdir()):
            raise FileExistsError(f"{out} already exists and is not empty") from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {split: info["splits"][split]["summary"] for split in SPLITS}
    summary["seconds"] = round(time.perf_counter() - start, 2)
    logger.info("wrote synthetic dataset %s in %.1fs: %s", out, summary["seconds"], summary)
    return summary


def read_info(root: Path) -> dict[str, Any]:
    """The synthetic_info.json of a generated dataset."""
    path = Path(root) / INFO_FILE
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def ensure_synthetic(root: Path, cfg: SyntheticConfig, requested: Sequence[str] = ()) -> Path:
    """Generate the dataset at `root` unless it is already there (safe when several ranks race).

    An existing dataset is used as it is; if it differs from `cfg` in one of the `requested` fields
    (those the user asked for explicitly) a warning says so.
    """
    root = Path(root)
    info_path = root / INFO_FILE
    if info_path.is_file():
        stored = read_info(root).get("config", {})
        wanted = dataclasses.asdict(cfg)
        different = {key: (stored.get(key), wanted[key]) for key in requested if stored.get(key) != wanted[key]}
        if different:
            logger.warning("%s was generated with other settings (stored, requested): %s; using it as it is "
                           "(delete it to regenerate)", root, different)
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists but holds no {INFO_FILE}: not a synthetic dataset; choose another "
                              "--synthetic_path or remove it")
    try:
        write_dataset(root, cfg)
    except FileExistsError:
        if not info_path.is_file():
            raise
    return root


# optional args attribute -> SyntheticConfig field
_ARG_FIELDS = {"synthetic_seed": "seed", "synthetic_train_videos": "train_videos",
               "synthetic_valid_videos": "valid_videos", "synthetic_frames": "frames"}


def config_from_args(args: Namespace) -> tuple[SyntheticConfig, list[str]]:
    """SyntheticConfig from the optional args synthetic_seed, synthetic_train_videos,
    synthetic_valid_videos, synthetic_frames and synthetic_size [H, W] (absent or None: default),
    and the names of the fields that were given."""
    values = {name: getattr(args, arg) for arg, name in _ARG_FIELDS.items() if getattr(args, arg, None) is not None}
    size = getattr(args, "synthetic_size", None)
    if size is not None:
        values["height"], values["width"] = (int(v) for v in size)
    return SyntheticConfig(**values), sorted(values)


@register_dataset("synthetic")
def build_synthetic(image_set: str, args: Namespace) -> Dataset:
    """The synthetic dataset at args.synthetic_path (generated first if missing), read as Ref-YTVOS."""
    cfg, requested = config_from_args(args)
    root = ensure_synthetic(Path(args.synthetic_path), cfg, requested)
    return build_ytvos_split(root, image_set, args)


@register_evaluator("synthetic")
def evaluate_synthetic(model: Any, postprocessors: dict, args: Namespace, device: Any, **kwargs: Any) -> Optional[dict[str, Any]]:
    """J, F and J&F on the synthetic valid split (it has annotations, unlike Ref-YTVOS valid)."""
    root = ensure_synthetic(Path(args.synthetic_path), *config_from_args(args))
    return evaluate_ytvos_format(root, model, postprocessors, args, device, **kwargs)
