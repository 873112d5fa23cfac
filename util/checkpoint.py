"""Checkpoint I/O: atomic writes and weights-only loading with an explicit allow-list.

Official ReferFormer-family checkpoints pickle an ``argparse.Namespace`` under 'args'; that class (and the
numpy types RNG states use) is all we allow. Anything else fails with an explanation instead of running a
stranger's pickle.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

IGNORED_CHECKPOINT_KEYS = ("text_encoder.embeddings.position_ids",)


def _safe_globals() -> list[Any]:
    """Classes a weights-only unpickler may build: the pickled args and numpy arrays/scalars (RNG states)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "uint8", "uint32", "bool")]
    return [argparse.Namespace, np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar, *dtypes]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) allowing argparse.Namespace and numpy arrays only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError or RuntimeError depending on the format
        raise RuntimeError(
            f"{path}: refusing to load this checkpoint with weights_only=True ({err}). It pickles objects other "
            "than tensors, an argparse.Namespace and numpy arrays. If you trust its origin, convert it once with "
            "`python tools/convert_checkpoint.py --trust SRC DST`, which keeps only the weights."
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def model_state_from_checkpoint(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint: ckpt['model'] (training format) or the dict itself (weights only)."""
    state = ckpt.get("model", ckpt)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("checkpoint has no 'model' state dict of tensors")
    return dict(state)


def remap_keys(state: Mapping[str, torch.Tensor], key_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys by prefix (official name -> our name), longest prefix first."""
    prefixes = sorted(key_map, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key_map[prefix] + key[len(prefix):]
                break
        out[key] = value
    return out


def load_model_weights(model: nn.Module, state: Mapping[str, torch.Tensor], key_map: Mapping[str, str] | None = None,
                       ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """Load non-strictly; returns (missing, unexpected, shape mismatches). Mismatched tensors are not loaded."""
    state = remap_keys(state, key_map or {})
    state = {k: v for k, v in state.items() if k not in IGNORED_CHECKPOINT_KEYS}
    own = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and own[k].shape != v.shape]
    bad = {k for k, _, _ in mismatched}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    missing = [k for k in result.missing_keys if k not in bad]
    return missing, list(result.unexpected_keys), mismatched


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
