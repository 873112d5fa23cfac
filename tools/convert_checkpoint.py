"""Re-save a trusted checkpoint that weights-only loading refuses, keeping only what is safe to load.

Running this executes the checkpoint's pickle: do it only for files whose origin you trust.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from util.checkpoint import save_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--trust", action="store_true", help="required: confirms you trust SRC's pickle")
    args = parser.parse_args(argv)
    if not args.trust:
        parser.error("loading SRC runs arbitrary code from it; pass --trust if you trust its origin")
    ckpt = torch.load(args.src, map_location="cpu", weights_only=False)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    out: dict = {"model": tensors}
    if isinstance(ckpt, dict) and isinstance(ckpt.get("args"), argparse.Namespace):
        out["args"] = argparse.Namespace(**{k: v for k, v in vars(ckpt["args"]).items()
                                            if isinstance(v, (int, float, str, bool, list, tuple, type(None)))})
    save_checkpoint(out, args.dst)
    print(f"wrote {args.dst}: {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
