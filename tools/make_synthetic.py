"""Generate the synthetic referring-video dataset in the Ref-YouTube-VOS layout.

Example:
    python tools/make_synthetic.py --out data/synthetic --seed 0 --train_videos 300 --valid_videos 60 \\
        --frames 10 --size 96 96
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.synthetic import SyntheticConfig, write_dataset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (must not exist unless --force)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train_videos", type=int, default=defaults.train_videos)
    parser.add_argument("--valid_videos", type=int, default=defaults.valid_videos)
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames per video")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(defaults.height, defaults.width),
                        help="frame height and width in pixels")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.out.exists():
        if not args.force:
            print(f"error: {args.out} exists; pass --force to replace it", file=sys.stderr)
            return 2
        shutil.rmtree(args.out)
    cfg = SyntheticConfig(seed=args.seed, train_videos=args.train_videos, valid_videos=args.valid_videos,
                          frames=args.frames, height=args.size[0], width=args.size[1])
    summary = write_dataset(args.out, cfg)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
