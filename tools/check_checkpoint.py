"""Load an official-format checkpoint into our model and report missing/unexpected keys and shape mismatches.

Usage: python tools/check_checkpoint.py CKPT --method M [model flags, e.g. --backbone resnet50
--with_box_refine --binary --freeze_text_encoder]. Exits 1 if anything does not match.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from models.registry import get_method  # noqa: E402
from opts import parse_args  # noqa: E402
from util.checkpoint import load_checkpoint, load_model_weights, model_state_from_checkpoint  # noqa: E402


def check(ckpt_path: str, argv: list[str]) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """Build the model for the flags (text encoder from its config only) and load the checkpoint into it."""
    args = parse_args(argv + ["--text_encoder_init", "config", "--backbone_pretrained", "none"])
    model, _, _ = build_model(args)
    state = model_state_from_checkpoint(load_checkpoint(ckpt_path))
    return load_model_weights(model, state, get_method(args.method).official_key_map)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    missing, unexpected, mismatched = check(argv[0], argv[1:])
    for title, rows in (("missing", missing), ("unexpected", unexpected)):
        print(f"{title} keys: {len(rows)}")
        for key in rows:
            print(f"  {key}")
    print(f"shape mismatches: {len(mismatched)}")
    for key, theirs, ours in mismatched:
        print(f"  {key}: checkpoint {list(theirs)} vs model {list(ours)}")
    ok = not (missing or unexpected or mismatched)
    print("OK: checkpoint matches the model" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
