"""Method registry: every RVOS method registers its model class under a --method name.

A method class provides ``add_args(parser)`` (its own flags, defaults = official configuration) and
``build(args) -> (model, criterion, postprocessors)``; it may define ``official_key_map`` to translate
official checkpoint names. Shared code only ever looks methods up here, never branches on names.
"""
from __future__ import annotations

from typing import Callable, TypeVar

METHODS: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator adding a method under ``name`` (used as ``--method name``)."""

    def wrap(cls: T) -> T:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {METHODS[name].__qualname__}")
        for attr in ("add_args", "build"):
            if not callable(getattr(cls, attr, None)):
                raise TypeError(f"method {name!r} ({cls.__qualname__}) must define {attr}()")
        cls.method_name = name
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type:
    """The registered class for ``name``, with a helpful error listing what exists."""
    import_builtin_methods()
    if name not in METHODS:
        raise KeyError(f"unknown --method {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def import_builtin_methods() -> None:
    """Import the base model and every module under models/methods so they self-register."""
    import importlib
    import pkgutil

    importlib.import_module("models.referformer")
    methods_pkg = importlib.import_module("models.methods")
    for info in pkgutil.iter_modules(methods_pkg.__path__):
        importlib.import_module(f"models.methods.{info.name}")
