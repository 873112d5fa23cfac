"""Fixtures for the deformable attention tests: the `gpu` marker and implementation switching."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest
import torch

from models.ops import backend


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def use_impl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Select an implementation through MSDA_IMPL for the rest of the test (forced: build failures raise)."""

    def select(impl: str) -> None:
        monkeypatch.setenv(backend.IMPL_ENV, impl)
        backend.reset_backend()

    yield select
    monkeypatch.delenv(backend.IMPL_ENV, raising=False)
    backend.reset_backend()
