"""Checkpoint I/O: atomic writes, weights-only loading with an explicit allow-list, resume discovery, RNG state.

Official ReferFormer-family checkpoints pickle an ``argparse.Namespace`` under 'args'; that class (and the
numpy array types older files may carry) is all we allow. Anything else fails with an explanation instead of
running a stranger's pickle. Our own checkpoints hold only tensors, plain Python values and a Namespace of
plain values, so they always load this way.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

IGNORED_CHECKPOINT_KEYS = ("text_encoder.embeddings.position_ids",)
LATEST_NAME = "checkpoint.pth"
_PLAIN = (int, float, str, bool, type(None))


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint's pickle needs classes or functions outside the allow-list; it was not executed."""


class CorruptCheckpointError(RuntimeError):
    """The file is not a readable checkpoint (truncated, empty, or not a torch file)."""


def _safe_globals() -> list[Any]:
    """Classes a weights-only unpickler may build: the pickled args and numpy arrays/scalars."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "uint8", "uint32", "bool")]
    return [argparse.Namespace, np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar, *dtypes]


def _refused_global(err: Exception) -> Optional[str]:
    """The line of a weights-only failure that names the refused global, or None if it is another error."""
    text = str(err)
    if "Weights only load failed" not in text:
        return None
    lines = [line.strip() for line in text.splitlines() if "unsupported" in line.lower() or "GLOBAL" in line]
    return lines[0] if lines else "weights-only unpickling failed"


def is_url(location: str | os.PathLike) -> bool:
    return str(location).startswith(("http://", "https://"))


def fetch_checkpoint(url: str) -> Path:
    """The local copy of a checkpoint URL, downloaded once into torch's hub cache (``$TORCH_HOME/hub/checkpoints``).

    As upstream's ``--resume https://...`` (torch.hub with check_hash): a file name of the form
    ``name-<hex>.ext`` with at least 8 hex digits must have a SHA-256 starting with them (fewer digits, as in
    ``swin-b.pth``, are a name, not a hash). The download goes to a temporary file first, so an interrupted one
    leaves nothing behind.
    """
    name = Path(url.split("?", 1)[0]).name
    if not name:
        raise ValueError(f"checkpoint URL {url} does not end with a file name")
    target = Path(torch.hub.get_dir()) / "checkpoints" / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(name)
    hash_prefix = match.group(1) if match and len(match.group(1)) >= 8 else None
    logger.info("downloading %s to %s", url, target)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=hash_prefix)
    except OSError as err:
        raise FileNotFoundError(f"checkpoint URL {url}: download failed ({err})") from err
    return target


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) allowing argparse.Namespace and numpy arrays only; an http(s) URL is
    downloaded first (fetch_checkpoint).

    Raises UnsafeCheckpointError when the pickle needs anything else (nothing of it runs) and
    CorruptCheckpointError when the file cannot be read as a checkpoint.
    """
    path = fetch_checkpoint(str(path)) if is_url(path) else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        refused = _refused_global(err)
        if refused is not None:
            raise UnsafeCheckpointError(
                f"{path}: refused to load with weights_only=True ({refused}). Loading it would run code named in its "
                "pickle, and only tensors, plain values, argparse.Namespace and numpy arrays are allowed. If you "
                "trust its origin, convert it once with `python tools/convert_checkpoint.py --trust SRC DST`, "
                "which keeps only the weights and the plain arguments."
            ) from err
        detail = str(err).split(". ")[0][:200]
        raise CorruptCheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                                     f"{type(err).__name__} {detail}") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def _plain_value(value: Any) -> Any:
    """value if made of plain Python types (paths and devices become strings), else None."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (os.PathLike, torch.device)):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = [_plain_value(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else type(value)(items)
    return None


def plain_namespace(args: Any) -> argparse.Namespace:
    """A copy of args with only plain values, so the checkpoint stays loadable with weights_only=True."""
    out = {}
    for key, value in vars(args).items():
        plain = _plain_value(value)
        if plain is None and value is not None:
            logger.debug("checkpoint args: dropping %s of type %s", key, type(value).__name__)
            continue
        out[key] = plain
    return argparse.Namespace(**out)


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
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and own[k].shape != v.shape]
    bad = {k for k, _, _ in mismatched}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    missing = [k for k in result.missing_keys if k not in bad]
    return missing, list(result.unexpected_keys), mismatched


def _temp_path_next_to(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves a torn file.

    If the save is interrupted, the previous file at `path` (the last good checkpoint) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_path_next_to(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Keep a copy of the checkpoint `src` as `dst` (a hard link when possible: no extra disk space)."""
    src, dst = Path(src), Path(dst)
    fd, tmp = _temp_path_next_to(dst)
    os.close(fd)
    Path(tmp).unlink()
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_candidates(output_dir: str | os.PathLike) -> list[Path]:
    """checkpoint*.pth files of output_dir, newest first (temporary files of interrupted saves excluded)."""
    files = [p for p in Path(output_dir).glob("checkpoint*.pth") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == LATEST_NAME), reverse=True)


def find_resume_checkpoint(output_dir: str | os.PathLike) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint of output_dir that loads, with its contents; None when there is none.

    Unreadable files are skipped with a warning, so a damaged latest file falls back to an epoch snapshot.
    """
    for path in checkpoint_candidates(output_dir):
        try:
            return path, load_checkpoint(path)
        except (CorruptCheckpointError, UnsafeCheckpointError, ValueError) as err:
            logger.warning("--resume auto: skipping it: %s", err)
    return None


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, as tensors and plain values (weights-only loadable).

    CUDA: the current device's generator only (a rank uses one GPU; touching the others would create
    contexts on them), and only once CUDA is in use.
    """
    version, keys, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of capture_rng_state (the CUDA state goes to the current device)."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
