"""Sources, compiler flags, CUDA architectures and the cache key of the deformable attention extension.

Shared by the just-in-time loader (``models/ops/backend.py``) and the ahead-of-time ``setup.py`` so that
both builds compile the same files with the same flags. This module imports only the standard library
and ``torch`` (never ``torch.utils.cpp_extension`` at import time) because ``setup.py`` loads it by path.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

OPS_DIR = Path(__file__).resolve().parent
SRC_DIR = OPS_DIR / "src"
PREBUILT_MODULE_NAME = "MultiScaleDeformableAttention"
_CXX_SUFFIXES = (".cpp",)
_CUDA_SUFFIXES = (".cu",)
_HEADER_SUFFIXES = (".h", ".cuh")


def source_files(with_cuda: bool) -> list[Path]:
    """The translation units to compile: every .cpp under src/, plus every .cu when building CUDA."""
    suffixes = _CXX_SUFFIXES + (_CUDA_SUFFIXES if with_cuda else ())
    return sorted(p for p in SRC_DIR.rglob("*") if p.suffix in suffixes)


def _hashed_files() -> list[Path]:
    """All files whose edits must trigger a rebuild (sources and headers of both back ends)."""
    suffixes = _CXX_SUFFIXES + _CUDA_SUFFIXES + _HEADER_SUFFIXES
    return sorted(p for p in SRC_DIR.rglob("*") if p.suffix in suffixes)


def _openmp_flags() -> list[str]:
    """OpenMP flags; without them ATen's header-only ``at::parallel_for`` runs on one thread."""
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        return ["-fopenmp"]
    return []


def cxx_flags() -> list[str]:
    """Host compiler flags (portable: no -march=native, the cached library may be shared between hosts)."""
    return ["-O3", *_openmp_flags()]


def ld_flags() -> list[str]:
    """Linker flags matching :func:`cxx_flags`."""
    return _openmp_flags()


def nvcc_flags() -> list[str]:
    """nvcc flags on top of the ones torch adds (which already disable the implicit half operators)."""
    return ["-O3", "--expt-relaxed-constexpr"]


def _is_cuda_toolkit(home: str | None) -> bool:
    return bool(home) and (Path(home) / "bin" / "nvcc").exists() and (Path(home) / "include" / "cuda_runtime.h").exists()


def cuda_home() -> str | None:
    """The CUDA toolkit to build with, or None when torch has no CUDA or no complete toolkit is found.

    Unlike torch's own guess (parent of the first nvcc on PATH), a candidate must also have the CUDA
    headers, so an nvcc wrapper script in /usr/local/bin does not send the build to /usr/local.
    """
    if torch.version.cuda is None:
        return None
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if nvcc:
        candidates += [str(Path(nvcc).parent.parent), str(Path(nvcc).resolve().parent.parent)]
    candidates.append("/usr/local/cuda")
    return next((home for home in candidates if _is_cuda_toolkit(home)), None)


def point_torch_at_cuda_home() -> str:
    """Make torch's extension builder use :func:`cuda_home` (its module-level guess may be wrong)."""
    home = cuda_home()
    if home is None:
        raise RuntimeError("no CUDA toolkit found (set CUDA_HOME to a folder with bin/nvcc and include/)")
    os.environ["CUDA_HOME"] = home
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = home
    return home


def nvcc_path() -> Path | None:
    """Path of nvcc inside :func:`cuda_home`, or None."""
    home = cuda_home()
    return Path(home) / "bin" / "nvcc" if home else None


@functools.lru_cache(maxsize=None)
def _nvcc_output(nvcc: str, *args: str) -> str:
    return subprocess.run([nvcc, *args], capture_output=True, text=True, check=True).stdout


def nvcc_version(nvcc: Path) -> tuple[int, int] | None:
    """(major, minor) of an nvcc binary, or None if it cannot be run."""
    try:
        found = re.search(r"release (\d+)\.(\d+)", _nvcc_output(str(nvcc), "--version"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return (int(found.group(1)), int(found.group(2))) if found else None


def cuda_build_problem() -> str | None:
    """Why the CUDA kernel cannot be compiled here, or None when it can (a GPU is not required)."""
    if torch.version.cuda is None:
        return "this torch build has no CUDA support"
    nvcc = nvcc_path()
    if nvcc is None:
        return "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    version = nvcc_version(nvcc)
    if version is None:
        return f"{nvcc} --version failed"
    torch_major = int(torch.version.cuda.split(".")[0])
    if version[0] != torch_major:
        return f"nvcc {version[0]}.{version[1]} at {nvcc} does not match torch's CUDA {torch.version.cuda}"
    return None


def nvcc_supported_archs(nvcc: Path) -> set[str]:
    """Compute capabilities nvcc can generate code for, as "8.6"-style strings."""
    try:
        listing = _nvcc_output(str(nvcc), "--list-gpu-arch")
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {f"{m[:-1]}.{m[-1]}" for m in re.findall(r"compute_(\d+)", listing)}


def default_arch_list(nvcc: Path) -> str:
    """TORCH_CUDA_ARCH_LIST for a machine without a visible GPU: the archs torch itself targets.

    Keeps only archs this nvcc supports and adds PTX for the newest so future GPUs can JIT it.
    """
    supported = nvcc_supported_archs(nvcc)
    archs = []
    for name in torch.cuda.get_arch_list():
        found = re.fullmatch(r"sm_(\d+)(\d)", name)
        if found and f"{found.group(1)}.{found.group(2)}" in supported:
            archs.append(f"{found.group(1)}.{found.group(2)}")
    if not archs:
        raise RuntimeError(f"none of torch's CUDA archs {torch.cuda.get_arch_list()} is supported by {nvcc}")
    archs = sorted(set(archs), key=lambda a: tuple(int(x) for x in a.split(".")))
    archs[-1] += "+PTX"
    return ";".join(archs)


def gencode_flags(arch_list: str) -> list[str]:
    """nvcc -gencode flags for a TORCH_CUDA_ARCH_LIST-style string such as "8.0;9.0+PTX"."""
    flags = []
    for arch in arch_list.replace(" ", ";").split(";"):
        number = arch.removesuffix("+PTX").replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def cuda_arch_flags(nvcc: Path, portable: bool) -> list[str]:
    """Explicit -gencode flags, or [] to let torch choose (TORCH_CUDA_ARCH_LIST, else the visible GPUs).

    ``portable`` (ahead-of-time builds) targets every arch torch itself targets unless
    TORCH_CUDA_ARCH_LIST says otherwise; JIT builds do that only when no GPU is visible.
    """
    if os.environ.get("TORCH_CUDA_ARCH_LIST") or (torch.cuda.is_available() and not portable):
        return []
    return gencode_flags(default_arch_list(nvcc))


def arch_key() -> str:
    """What decides the compiled CUDA archs: the env override, else the visible GPUs' capabilities."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{major}.{minor}" for major, minor in caps)
    return "default"


def sources_hash() -> str:
    """Hash of the kernel sources alone: identifies an installed build independently of build options."""
    digest = hashlib.sha256()
    for path in _hashed_files():
        digest.update(path.relative_to(SRC_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_key(with_cuda: bool) -> str:
    """JIT cache key: sources, flags, torch version and (for CUDA) the target archs.

    Embedded in the JIT module name so that any edit or configuration change gets a fresh build
    directory instead of loading a stale library.
    """
    config = [sources_hash(), torch.__version__, str(with_cuda), *cxx_flags(), *ld_flags()]
    if with_cuda:
        config += [*nvcc_flags(), str(torch.version.cuda), arch_key()]
    return hashlib.sha256("\0".join(config).encode()).hexdigest()[:16]


def define_flags(with_cuda: bool) -> list[str]:
    """Macros for both compilers: the sources hash (reported by ``build_info()``) and the CUDA switch."""
    return [f"-DMSDA_SOURCES_HASH={sources_hash()}", *(["-DMSDA_WITH_CUDA"] if with_cuda else [])]


def jit_module_name(with_cuda: bool) -> str:
    """Name of the JIT extension; it embeds :func:`build_key`, so edits never reuse a stale build."""
    return f"msda_{'cuda' if with_cuda else 'cpu'}_{build_key(with_cuda)}"
