"""Method registry: every RVOS method registers its model class under a --method name.

A method class provides ``add_args(parser)`` (its own flags, defaults = official configuration) and
``build(args) -> (model, criterion, postprocessors)``; it may define ``official_key_map`` to translate
official checkpoint names and ``default_overrides`` (flag name -> value) for shared flags whose official
default differs for that method, which ``apply_method_defaults`` applies to flags not given on the command
line. Shared code only ever looks methods up here, never branches on names.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Optional, Sequence, TypeVar

logger = logging.getLogger(__name__)

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


def given_on_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the flags that ``argv`` sets explicitly (abbreviations and aliases included).

    Every destination is pre-filled with a sentinel, which argparse keeps for flags that are absent (it
    only fills defaults into attributes the namespace lacks); unknown arguments are ignored.
    """
    sentinel = object()
    probe = argparse.Namespace(**{a.dest: sentinel for a in parser._actions if a.dest != argparse.SUPPRESS})
    parsed, _ = parser.parse_known_args(list(argv), probe)
    return {dest for dest, value in vars(parsed).items() if value is not sentinel}


def apply_method_defaults(args: argparse.Namespace, argv: Optional[Sequence[str]] = None,
                          parser: Optional[argparse.ArgumentParser] = None) -> dict[str, Any]:
    """Give every flag named in ``args.method``'s ``default_overrides`` that method's default, unless
    ``argv`` (default: sys.argv[1:]) sets it. ``parser`` is the parser that produced ``args`` (default:
    opts.get_args_parser()). Returns the values applied.
    """
    method = get_method(getattr(args, "method", "referformer"))
    overrides: dict[str, Any] = getattr(method, "default_overrides", {})
    if not overrides:
        return {}
    if parser is None:
        from opts import get_args_parser

        parser = get_args_parser()
    argv = sys.argv[1:] if argv is None else argv
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{method.__qualname__}.default_overrides names flags the parser does not define: {unknown}")
    explicit = given_on_command_line(parser, argv)
    applied = {name: value for name, value in overrides.items() if name not in explicit}
    for name, value in applied.items():
        setattr(args, name, value)
    if applied:
        logger.info("method %s defaults: %s", method.method_name,
                    ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied
