"""Chooses, builds and caches the implementation of multi-scale deformable attention.

Why this exists: the op must never block a user. Importing ``models.ops`` compiles nothing; the first
call resolves the implementation once per process, in this order:

1. ``MSDA_IMPL=pytorch`` forces the pure-PyTorch ``grid_sample`` path (no build, no warning).
2. An installed ``setup.py`` build (module ``MultiScaleDeformableAttention``) whose sources hash matches
   the sources in this checkout (and that has CUDA when CUDA is wanted).
3. A just-in-time build with ``torch.utils.cpp_extension.load`` and ninja, cached under
   ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions/<py>_<cu>/``) in a folder named after a
   hash of sources, flags and torch version. CUDA is compiled in only when a GPU is visible and a
   matching toolkit exists (or ``MSDA_IMPL=cuda`` asks for it).
4. With ``MSDA_IMPL=auto`` a failed build falls back to the pure-PyTorch path with exactly one
   :class:`MSDAFallbackWarning`; with ``MSDA_IMPL=cpu|cuda`` it raises instead.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from types import ModuleType

import torch

from . import build_config

logger = logging.getLogger(__name__)

IMPL_ENV = "MSDA_IMPL"
IMPL_CHOICES = ("auto", "cpu", "cuda", "pytorch")


class MSDAFallbackWarning(RuntimeWarning):
    """The compiled op could not be used; the (slower, more memory-hungry) pure-PyTorch path runs."""


@dataclass(frozen=True)
class Backend:
    """The resolved implementation: the compiled module (or None), where it came from, and why."""

    requested: str
    extension: ModuleType | None
    origin: str
    with_cuda: bool
    reason: str

    def implementation_for(self, device: torch.device) -> str:
        """"cpu", "cuda" or "pytorch": what runs for tensors on ``device``."""
        if device.type == "cuda" and self.requested == "cpu":
            raise RuntimeError(f"{IMPL_ENV}=cpu selects the compiled CPU kernel, which cannot run on {device}; "
                               f"use {IMPL_ENV}=auto or {IMPL_ENV}=cuda")
        if self.extension is None:
            return "pytorch"
        if device.type == "cpu":
            return "cpu"
        if device.type == "cuda" and self.with_cuda:
            return "cuda"
        return "pytorch"


_lock = threading.Lock()
_backend: Backend | None = None
_warned = False
_loaded: dict[bool, tuple[ModuleType, str]] = {}  # with_cuda -> (module, origin); survives reset_backend


def requested_impl() -> str:
    """The value of ``MSDA_IMPL`` (default "auto"), validated."""
    value = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
    if value not in IMPL_CHOICES:
        raise ValueError(f"environment variable {IMPL_ENV}={value!r}; expected one of {', '.join(IMPL_CHOICES)}")
    return value


def get_backend() -> Backend:
    """The process-wide backend, resolved (and built if needed) on first call."""
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                _backend = _resolve(requested_impl())
    return _backend


def peek_backend() -> Backend | None:
    """The backend if it was already resolved, without triggering a build."""
    return _backend


def reset_backend() -> None:
    """Forget the resolved backend and the warning state so the next call re-reads ``MSDA_IMPL``.

    For tests and benchmarks that switch implementations inside one process.
    """
    global _backend, _warned
    with _lock:
        _backend = None
        _warned = False


def implementation_for(device: torch.device) -> str:
    """"cpu", "cuda" or "pytorch" for tensors on ``device`` (resolves the backend on first use)."""
    return get_backend().implementation_for(device)


def compiled_extension() -> ModuleType:
    """The compiled module; raises with the reason when only the pure-PyTorch path is available."""
    backend = get_backend()
    if backend.extension is None:
        raise RuntimeError(f"the compiled deformable attention op is not available: {backend.reason}")
    return backend.extension


def _wants_cuda(requested: str) -> tuple[bool, str]:
    """Whether to compile CUDA, and why (CUDA costs minutes of build time, so only when it can be used)."""
    if requested == "cuda":
        return True, f"{IMPL_ENV}=cuda"
    if requested == "cpu":
        return False, f"{IMPL_ENV}=cpu"
    problem = build_config.cuda_build_problem()
    if problem is not None:
        return False, f"CPU only: {problem}"
    if not torch.cuda.is_available():
        return False, "CPU only: no GPU visible"
    return True, "GPU visible and CUDA toolkit found"


def _resolve(requested: str) -> Backend:
    if requested == "pytorch":
        return Backend(requested, None, "none", False, f"{IMPL_ENV}=pytorch forces the pure-PyTorch path")
    with_cuda, why = _wants_cuda(requested)
    attempts = [with_cuda, False] if with_cuda and requested == "auto" else [with_cuda]
    errors = []
    for cuda in attempts:
        try:
            extension, origin = _load_extension(cuda)
        except Exception as exc:  # any build or import failure must fall back, whatever its type
            errors.append(f"{'CUDA' if cuda else 'CPU'} build failed: {exc}")
            logger.debug("deformable attention build failed", exc_info=True)
            continue
        if errors:
            _warn_fallback(f"the CUDA kernel could not be built, CUDA tensors use the pure-PyTorch path "
                           f"({errors[0]})")
        has_cuda = bool(extension.build_info().get("with_cuda"))
        return Backend(requested, extension, origin, has_cuda, "; ".join([why, *errors]))
    if requested != "auto":
        raise RuntimeError(f"{IMPL_ENV}={requested} but the deformable attention extension could not be "
                           f"built: {'; '.join(errors)}")
    _warn_fallback(f"compiled deformable attention unavailable, using the pure-PyTorch path ({'; '.join(errors)})")
    return Backend(requested, None, "none", False, "; ".join(errors))


def _warn_fallback(message: str) -> None:
    """Emit the fallback warning once per process (reset by :func:`reset_backend`)."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message + f". Set {IMPL_ENV}=pytorch to silence this.", MSDAFallbackWarning, stacklevel=4)


def _load_extension(with_cuda: bool) -> tuple[ModuleType, str]:
    """An up-to-date installed build if there is one, else a (cached) JIT build; kept per process."""
    if with_cuda not in _loaded:
        prebuilt = _import_prebuilt(with_cuda)
        if prebuilt is not None:
            _loaded[with_cuda] = (prebuilt, f"installed module {build_config.PREBUILT_MODULE_NAME}")
        else:
            module = _jit_build(with_cuda)
            _loaded[with_cuda] = (module, f"JIT build {module.__name__}")
    return _loaded[with_cuda]


def _import_prebuilt(with_cuda: bool) -> ModuleType | None:
    """The ``setup.py`` build, only if it is ours, built from these sources and has CUDA when wanted.

    The original Deformable-DETR package uses the same module name but has no ``build_info``; it is ignored.
    """
    try:
        module = importlib.import_module(build_config.PREBUILT_MODULE_NAME)
    except ImportError:
        return None
    info_fn = getattr(module, "build_info", None)
    if info_fn is None:
        logger.info("ignoring %s: not built from models/ops", build_config.PREBUILT_MODULE_NAME)
        return None
    info = info_fn()
    if info.get("sources_hash") != build_config.sources_hash():
        logger.info("ignoring installed %s: built from other sources (rebuild with setup.py)",
                    build_config.PREBUILT_MODULE_NAME)
        return None
    if with_cuda and not info.get("with_cuda"):
        logger.info("ignoring installed %s: built without CUDA", build_config.PREBUILT_MODULE_NAME)
        return None
    return module


def _jit_build(with_cuda: bool) -> ModuleType:
    """Compile (or load from the cache) the extension with ninja; a few tens of seconds on first use."""
    from torch.utils import cpp_extension

    name = build_config.jit_module_name(with_cuda)
    extra_cuda_cflags = []
    if with_cuda:
        problem = build_config.cuda_build_problem()
        if problem is not None:
            raise RuntimeError(problem)
        build_config.point_torch_at_cuda_home()
        extra_cuda_cflags = [*build_config.nvcc_flags(), *build_config.define_flags(with_cuda),
                             *build_config.cuda_arch_flags(build_config.nvcc_path(), portable=False)]
    logger.info("loading deformable attention extension %s (compiled on first use, then cached)", name)
    return cpp_extension.load(
        name=name,
        sources=[str(p) for p in build_config.source_files(with_cuda)],
        extra_cflags=[*build_config.cxx_flags(), *build_config.define_flags(with_cuda)],
        extra_cuda_cflags=extra_cuda_cflags,
        extra_ldflags=build_config.ld_flags(),
        extra_include_paths=[str(build_config.SRC_DIR)],
        with_cuda=with_cuda,
        verbose=logger.isEnabledFor(logging.DEBUG),
    )
