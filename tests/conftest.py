"""Shared fixtures and import paths: the repository root is importable, everything stays offline."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rvos_testing import tiny_model_flags, write_tiny_roberta  # noqa: E402


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_roberta(tmp_path_factory.mktemp("tiny_roberta"))


@pytest.fixture()
def tiny_flags(tiny_roberta: Path) -> list[str]:
    return tiny_model_flags(tiny_roberta)
