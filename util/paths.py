"""Turning names read from data files (video ids, expression ids, frame names) into paths safely.

Metadata comes from other people's JSON. A name with a separator, '..', a drive colon or a control
character could make a reader leave the dataset folder or a writer leave the output folder, so every
such name is checked before it becomes a path component, and writers join through :func:`safe_join`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_UNSAFE_CHARS = re.compile(r"[/\\:\x00-\x1f\x7f]")


class UnsafePathError(ValueError):
    """A name would not stay a single path component inside its folder."""


def check_path_component(name: object) -> str:
    """`name` unchanged if it is a non-empty string usable as one file or folder name, else UnsafePathError."""
    if not isinstance(name, str) or not name or name in (".", "..") or _UNSAFE_CHARS.search(name):
        raise UnsafePathError(f"{name!r} is not a safe file or folder name (it must be a non-empty name "
                              "without '/', '\\', ':', control characters, and not '.' or '..')")
    return name


def safe_join(root: str | os.PathLike, *parts: str) -> Path:
    """root / part / ... after checking every part, guaranteed to stay inside root (symlinks resolved)."""
    path = Path(root)
    for part in parts:
        path = path / check_path_component(part)
    base = Path(root).resolve()
    if not path.resolve().is_relative_to(base):
        raise UnsafePathError(f"{path} resolves outside {base}")
    return path
