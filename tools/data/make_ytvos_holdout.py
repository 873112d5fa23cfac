"""Hold out part of Ref-YouTube-VOS train as an annotated 'valid' split, to score models locally.

    python tools/data/make_ytvos_holdout.py --ytvos_path data/ref-youtube-vos --out data/ref-ytvos-holdout \\
        [--num_videos 200] [--seed 0] [--mode symlink|copy]

Writes a Ref-YTVOS-format root: OUT/train (the remaining videos) and OUT/valid (the held-out ones, with
their Annotations), meta.json for both, meta_expressions/{train,valid}. Video folders are linked (or
copied), the source stays untouched. Train on it with ``main.py --ytvos_path OUT``; score with
``main.py --ytvos_path OUT --eval --resume CKPT`` (per expression J&F), or run ``inference_ytvos.py
--ytvos_path OUT`` and ``eval_ytvos.py --ytvos_path OUT --results_path DIR`` to score the exact files
you would upload.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from datasets.ytvos import read_json  # noqa: E402
from tools.data.convert_davis_to_ytvos import LINK_MODES, place, write_json  # noqa: E402


def make_holdout(source: Path, out: Path, num_videos: int, seed: int = 0, mode: str = "symlink") -> dict[str, int]:
    """Split source/train into out/train and out/valid; returns the number of videos per split."""
    expressions = read_json(source / "meta_expressions" / "train" / "meta_expressions.json")["videos"]
    meta = read_json(source / "train" / "meta.json")["videos"]
    videos = sorted(expressions)
    if not 0 < num_videos < len(videos):
        raise ValueError(f"--num_videos must be between 1 and {len(videos) - 1} (train has {len(videos)} videos)")
    held_out = set(random.Random(seed).sample(videos, num_videos))
    counts = {}
    for split in ("train", "valid"):
        chosen = [v for v in videos if (v in held_out) == (split == "valid")]
        for video in chosen:
            for folder in ("JPEGImages", "Annotations"):
                place(source / "train" / folder / video, out / split / folder / video, mode)
        write_json(out / split / "meta.json", {"videos": {v: meta[v] for v in chosen if v in meta}})
        write_json(out / "meta_expressions" / split / "meta_expressions.json", {"videos": {v: expressions[v] for v in chosen}})
        counts[split] = len(chosen)
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ytvos_path", type=Path, default=Path("data/ref-youtube-vos"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num_videos", type=int, default=200, help="videos to hold out as 'valid'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="symlink", choices=LINK_MODES)
    args = parser.parse_args(argv)
    try:
        counts = make_holdout(args.ytvos_path, args.out, args.num_videos, args.seed, args.mode)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {args.out}: {counts['train']} train videos, {counts['valid']} held-out valid videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
