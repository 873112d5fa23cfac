"""A tiny dataset in the real Ref-YouTube-VOS on-disk format (JPEG frames, palette PNGs, meta files).

train:
  vid_a  8 frames 48x64 (H x W); object 1 ('person') is the rectangle rows 10-19, cols 5+2t .. 14+2t
         in frame t; object 2 ('dog') the rectangle rows 30-39, cols 40-49, only in frames 0 and 1.
         Frame t has red channel 20 * t, so the frame order can be checked from pixel values.
  vid_b  3 frames 40x40; object 1 ('others') rows 0-9, cols 0-9.
valid:
  vid_c  4 frames with Annotations (object 1 and object 3); vid_d 2 frames without Annotations;
  vid_e  listed in meta_expressions/valid and in meta_expressions/test, no frames (must be dropped).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.synthetic import davis_palette

FRAME_NAMES_A = [f"{5 * i:05d}" for i in range(8)]   # "00000", "00005", ... like Ref-YTVOS


def box_a1(t: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of vid_a object 1 in frame t, last-index convention."""
    return 5 + 2 * t, 10, 14 + 2 * t, 19


BOX_A2 = (40, 30, 49, 39)


def _write_frame(path: Path, height: int, width: int, red: int, boxes: list[tuple[int, int, int, int]]) -> None:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = red
    image[..., 2] = 60
    for x1, y1, x2, y2 in boxes:
        image[y1:y2 + 1, x1:x2 + 1, 1] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def _write_annotation(path: Path, height: int, width: int, objects: dict[int, tuple[int, int, int, int]]) -> None:
    labels = np.zeros((height, width), np.uint8)
    for obj_id, (x1, y1, x2, y2) in objects.items():
        labels[y1:y2 + 1, x1:x2 + 1] = obj_id
    image = Image.frombytes("P", (width, height), labels.tobytes())
    image.putpalette(davis_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_ytvos_fixture(root: Path) -> Path:
    """Write the fixture described in the module docstring under `root`."""
    train = root / "train"
    for t, name in enumerate(FRAME_NAMES_A):
        objects = {1: box_a1(t)} | ({2: BOX_A2} if t < 2 else {})
        _write_frame(train / "JPEGImages" / "vid_a" / f"{name}.jpg", 48, 64, 20 * t, list(objects.values()))
        _write_annotation(train / "Annotations" / "vid_a" / f"{name}.png", 48, 64, objects)
    for t in range(3):
        _write_frame(train / "JPEGImages" / "vid_b" / f"{t:05d}.jpg", 40, 40, 30 * t, [(0, 0, 9, 9)])
        _write_annotation(train / "Annotations" / "vid_b" / f"{t:05d}.png", 40, 40, {1: (0, 0, 9, 9)})
    _write_json(train / "meta.json", {"videos": {
        "vid_a": {"objects": {"1": {"category": "person", "frames": FRAME_NAMES_A},
                              "2": {"category": "dog", "frames": FRAME_NAMES_A[:2]}}},
        "vid_b": {"objects": {"1": {"category": "others", "frames": ["00000", "00001", "00002"]}}}}})
    _write_json(root / "meta_expressions" / "train" / "meta_expressions.json", {"videos": {
        "vid_a": {"expressions": {"0": {"exp": "  The  Person on the\tLEFT ", "obj_id": "1"},
                                  "1": {"exp": "a dog", "obj_id": "2"}},
                  "frames": list(reversed(FRAME_NAMES_A))},
        "vid_b": {"expressions": {"0": {"exp": "the bright box", "obj_id": "1"}},
                  "frames": ["00000", "00001", "00002"]}}})

    valid = root / "valid"
    for t in range(4):
        objects = {1: (2 + t, 2, 11 + t, 11), 3: (20, 20, 29, 25)}
        _write_frame(valid / "JPEGImages" / "vid_c" / f"{t:05d}.jpg", 32, 48, 40 * t, list(objects.values()))
        _write_annotation(valid / "Annotations" / "vid_c" / f"{t:05d}.png", 32, 48, objects)
    for t in range(2):
        _write_frame(valid / "JPEGImages" / "vid_d" / f"{t:05d}.jpg", 30, 20, 0, [])
    _write_json(root / "meta_expressions" / "valid" / "meta_expressions.json", {"videos": {
        "vid_c": {"expressions": {"0": {"exp": "The Left Box", "obj_id": "1"},
                                  "1": {"exp": "the other box", "obj_id": "3"}},
                  "frames": ["00000", "00001", "00002", "00003"]},
        "vid_d": {"expressions": {"0": {"exp": "nothing", "obj_id": "1"}}, "frames": ["00000", "00001"]},
        "vid_e": {"expressions": {"0": {"exp": "hidden", "obj_id": "1"}}, "frames": ["00000"]}}})
    _write_json(root / "meta_expressions" / "test" / "meta_expressions.json", {"videos": {
        "vid_e": {"expressions": {"0": {"exp": "hidden", "obj_id": "1"}}, "frames": ["00000"]}}})
    return root
