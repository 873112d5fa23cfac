"""Fixtures of the dataset tests: the tiny Ref-YouTube-VOS-format tree of ytvos_fixture.py."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.datasets.ytvos_fixture import write_ytvos_fixture


@pytest.fixture(scope="session")
def ytvos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only fixture tree (do not modify it in tests; use `make_ytvos_root` for that)."""
    return write_ytvos_fixture(tmp_path_factory.mktemp("ref_ytvos"))


@pytest.fixture()
def make_ytvos_root(tmp_path: Path) -> Callable[[], Path]:
    """Factory for a private, modifiable copy of the fixture tree."""
    return lambda: write_ytvos_fixture(tmp_path / "ref_ytvos")
