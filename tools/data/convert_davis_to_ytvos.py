"""Convert Ref-DAVIS17 (DAVIS-2017 + Khoreva et al. text annotations) to the Ref-YouTube-VOS layout.

    python tools/data/convert_davis_to_ytvos.py --davis_path data/ref-davis [--mode symlink|copy|hardlink]

Reads (under --davis_path):
    DAVIS/JPEGImages/480p/<video>/*.jpg, DAVIS/Annotations_unsupervised/480p/<video>/*.png,
    DAVIS/ImageSets/2017/{train,val}.txt, DAVIS/davis_semantics.json,
    davis_text_annotations/Davis17_annot1.txt, Davis17_annot1_full_video.txt (UTF-8),
    Davis17_annot2.txt, Davis17_annot2_full_video.txt (latin-1); lines `video obj_id "sentence"`.
Writes (under --output_dir, default --davis_path):
    {train,valid}/JPEGImages/<video>, {train,valid}/Annotations/<video>   (links or copies)
    {train,valid}/meta.json, meta_expressions/{train,valid}/meta_expressions.json

Unlike upstream, the DAVIS folders are linked or copied, never moved, so ``eval_davis.py`` keeps
reading the original tree (spec 11.1 #14). Expression ids follow upstream's interleaving, id =
4 * object rank + annotator slot (annot1-first, annot1-full, annot2-first, annot2-full), with objects
ranked by numeric id (upstream sorts them as strings, "10" < "2", which only differs for videos with
10 or more objects). An object missing some annotator's sentence keeps a gap in the numbering instead
of shifting the others (upstream's zip silently dropped the object's later sentences).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger("convert_davis_to_ytvos")

ANNOTATION_FILES = (  # (file name, encoding), in annotator-slot order
    ("Davis17_annot1.txt", "utf-8"),
    ("Davis17_annot1_full_video.txt", "utf-8"),
    ("Davis17_annot2.txt", "latin-1"),
    ("Davis17_annot2_full_video.txt", "latin-1"),
)
VIDEO_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
SPLITS = {"train": "train", "valid": "val"}  # output split -> DAVIS ImageSets name
LINK_MODES = ("symlink", "copy", "hardlink")

Expressions = dict[str, dict[int, str]]  # video -> object id -> sentence


def read_split(davis_dir: Path, name: str) -> list[str]:
    """Video names of DAVIS/ImageSets/2017/<name>.txt."""
    path = davis_dir / "ImageSets" / "2017" / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"DAVIS split list not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def parse_expression_line(line: str, where: str) -> tuple[str, int, str]:
    """`video obj_id "sentence"` -> (video with upstream's name fixes, object id, sentence without quotes)."""
    parts = line.split(maxsplit=2)
    if len(parts) < 3 or not parts[1].isdigit():
        raise ValueError(f"{where}: expected 'video obj_id \"sentence\"', got {line!r}")
    video, obj_id, sentence = parts
    sentence = " ".join(sentence.split())
    if len(sentence) >= 2 and sentence[0] == sentence[-1] == '"':
        sentence = sentence[1:-1].strip()
    if not sentence:
        raise ValueError(f"{where}: empty sentence")
    return VIDEO_NAME_FIXES.get(video, video), int(obj_id), sentence


def read_expression_file(path: Path, encoding: str) -> Expressions:
    """One annotator file -> {video: {obj_id: sentence}}."""
    if not path.is_file():
        raise FileNotFoundError(f"text annotation file not found: {path}")
    videos: Expressions = {}
    for number, line in enumerate(path.read_text(encoding=encoding).splitlines(), start=1):
        if not line.strip():
            continue
        video, obj_id, sentence = parse_expression_line(line, f"{path}:{number}")
        if obj_id in videos.setdefault(video, {}):
            raise ValueError(f"{path}:{number}: second sentence for video {video!r} object {obj_id}")
        videos[video][obj_id] = sentence
    return videos


def video_expressions(video: str, annotators: list[Expressions]) -> dict[str, dict[str, str]]:
    """meta_expressions entries of one video: id 4 * object rank + slot, objects in numeric order."""
    objects = sorted({obj for slots in annotators for obj in slots.get(video, {})})
    expressions = {}
    for rank, obj_id in enumerate(objects):
        for slot, slots in enumerate(annotators):
            sentence = slots.get(video, {}).get(obj_id)
            if sentence is None:
                logger.warning("video %s object %d: no sentence from %s", video, obj_id, ANNOTATION_FILES[slot][0])
                continue
            expressions[str(4 * rank + slot)] = {"exp": sentence, "obj_id": str(obj_id)}
    return expressions


def frame_names(folder: Path) -> list[str]:
    """Sorted JPEG frame names (without extension) of a video folder."""
    names = sorted(p.stem for p in folder.glob("*.jpg"))
    if not names:
        raise FileNotFoundError(f"no .jpg frames in {folder}")
    return names


def place(src: Path, dst: Path, mode: str) -> None:
    """Make `dst` a link to / copy of the folder `src`, leaving `src` untouched (existing dst is kept)."""
    if not src.is_dir():
        raise FileNotFoundError(f"DAVIS folder not found: {src}")
    if dst.exists() or dst.is_symlink():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        dst.symlink_to(os.path.relpath(src, dst.parent), target_is_directory=True)
    elif mode == "copy":
        shutil.copytree(src, dst)
    elif mode == "hardlink":
        shutil.copytree(src, dst, copy_function=os.link)
    else:
        raise ValueError(f"unknown mode {mode!r}; choose from {LINK_MODES}")


def write_json(path: Path, data: Any) -> None:
    """JSON written through a temporary file, keys in insertion order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def read_semantics(davis_dir: Path) -> dict[str, dict[str, str]]:
    path = davis_dir / "davis_semantics.json"
    if not path.is_file():
        raise FileNotFoundError(f"DAVIS semantics file not found: {path} (from DAVIS-2017_semantics-480p.zip)")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def video_objects(semantics: dict[str, dict[str, str]], video: str) -> dict[str, dict[str, str]]:
    """meta.json objects of a video: {obj_id: {"category": name}} in numeric id order."""
    if video not in semantics:
        raise ValueError(f"davis_semantics.json has no entry for video {video!r}")
    return {str(k): {"category": semantics[video][k]} for k in sorted(semantics[video], key=int)}


def convert(davis_path: Path, output_dir: Optional[Path] = None, mode: str = "symlink",
            text_dir: Optional[Path] = None) -> dict[str, int]:
    """Write the Ref-YTVOS-layout tree; returns {split: number of expressions}."""
    davis_path = Path(davis_path)
    output_dir = Path(output_dir) if output_dir is not None else davis_path
    davis_dir = davis_path / "DAVIS"
    text_dir = Path(text_dir) if text_dir is not None else davis_path / "davis_text_annotations"
    annotators = [read_expression_file(text_dir / name, encoding) for name, encoding in ANNOTATION_FILES]
    semantics = read_semantics(davis_dir)
    counts = {}
    for split, davis_split in SPLITS.items():
        meta, expressions = {}, {}
        for video in read_split(davis_dir, davis_split):
            images = davis_dir / "JPEGImages" / "480p" / video
            place(images, output_dir / split / "JPEGImages" / video, mode)
            place(davis_dir / "Annotations_unsupervised" / "480p" / video,
                  output_dir / split / "Annotations" / video, mode)
            meta[video] = {"objects": video_objects(semantics, video)}
            entry = video_expressions(video, annotators)
            if not entry:
                logger.warning("video %s has no expressions in %s", video, text_dir)
            expressions[video] = {"expressions": entry, "frames": frame_names(images)}
        write_json(output_dir / split / "meta.json", {"videos": meta})
        write_json(output_dir / "meta_expressions" / split / "meta_expressions.json", {"videos": expressions})
        counts[split] = sum(len(v["expressions"]) for v in expressions.values())
        logger.info("%s: %d videos, %d expressions", split, len(expressions), counts[split])
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis_path", type=Path, default=Path("data/ref-davis"),
                        help="folder holding DAVIS/ and davis_text_annotations/")
    parser.add_argument("--output_dir", type=Path, default=None, help="where to write (default: --davis_path)")
    parser.add_argument("--text_dir", type=Path, default=None,
                        help="folder of the Davis17_annot*.txt files (default: DAVIS_PATH/davis_text_annotations)")
    parser.add_argument("--mode", default="symlink", choices=LINK_MODES,
                        help="how frames and annotations reach the new layout (never moved)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        counts = convert(args.davis_path, args.output_dir, args.mode, args.text_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Converted Ref-DAVIS17 into {args.output_dir or args.davis_path}: " +
          ", ".join(f"{split} {n} expressions" for split, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
