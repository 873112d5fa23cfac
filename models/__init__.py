"""Model construction: ``build_model(args)`` looks the method up in the registry."""
from __future__ import annotations

from typing import Any

from torch import nn

from .registry import get_method, register_method  # noqa: F401  (re-exported for method modules)


def build_model(args: Any) -> tuple[nn.Module, nn.Module, dict[str, nn.Module]]:
    """Build (model, criterion, postprocessors) for ``args.method`` (default "referformer")."""
    return get_method(getattr(args, "method", "referformer")).build(args)
