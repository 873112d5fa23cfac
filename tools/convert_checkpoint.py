"""Re-save a trusted checkpoint that weights-only loading refuses, keeping only what is safe to load.

Running this executes the checkpoint's pickle: do it only for files whose origin you trust. The output
holds the model tensors under 'model' and, if present, the pickled arguments reduced to plain values
under 'args'; optimiser and scheduler states are dropped (fine-tune or evaluate from it, do not resume).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from util.checkpoint import load_checkpoint, plain_namespace, save_checkpoint  # noqa: E402


def convert(src: Path, dst: Path) -> int:
    """Unpickle SRC without restrictions and write its tensors (and plain args) to DST; returns the tensor count."""
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise SystemExit(f"{src}: expected a dict of tensors or a dict with 'model', got {type(state).__name__}")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    out: dict = {"model": tensors}
    if isinstance(ckpt, dict) and isinstance(ckpt.get("args"), argparse.Namespace):
        out["args"] = plain_namespace(ckpt["args"])
    save_checkpoint(out, dst)
    load_checkpoint(dst)
    return len(tensors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--trust", action="store_true", help="required: confirms you trust SRC's pickle")
    args = parser.parse_args(argv)
    if not args.trust:
        parser.error("loading SRC runs arbitrary code from it; pass --trust if you trust its origin")
    count = convert(args.src, args.dst)
    print(f"wrote {args.dst}: {count} tensors (loads with weights_only=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
