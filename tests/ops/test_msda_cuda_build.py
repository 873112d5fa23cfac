"""Compile-only check of the CUDA sources with nvcc, so CI catches CUDA build breakage without a GPU."""
from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

from models.ops import build_config

CUDA_PROBLEM = build_config.cuda_build_problem()
NVCC_DEFINES = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]


def _torch_includes() -> list[str]:
    return [f"-I{path}" for path in include_paths("cpu")] + [f"-I{build_config.SRC_DIR}"]


def _oldest_arch() -> str:
    """One arch keeps the check to well under a minute; the oldest catches use of newer intrinsics."""
    return build_config.default_arch_list(build_config.nvcc_path()).split(";")[0].removesuffix("+PTX")


@pytest.mark.skipif(CUDA_PROBLEM is not None, reason=f"CUDA compile check needs nvcc: {CUDA_PROBLEM}")
def test_cuda_kernel_compiles(tmp_path: Path) -> None:
    home = build_config.cuda_home()
    sources = [p for p in build_config.source_files(with_cuda=True) if p.suffix == ".cu"]
    assert sources, "no .cu sources found under models/ops/src"
    for source in sources:
        command = [str(build_config.nvcc_path()), "-c", str(source), "-o", str(tmp_path / f"{source.stem}.o"),
                   "-std=c++20", "-Xcompiler", "-fPIC", *NVCC_DEFINES, *build_config.nvcc_flags(),
                   *build_config.define_flags(with_cuda=True), *build_config.gencode_flags(_oldest_arch()),
                   f"-I{home}/include", *_torch_includes()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"nvcc failed on {source.name}:\n{result.stderr[-4000:]}"


@pytest.mark.skipif(CUDA_PROBLEM is not None, reason=f"CUDA compile check needs nvcc: {CUDA_PROBLEM}")
def test_binding_compiles_with_cuda_enabled(tmp_path: Path) -> None:
    """The MSDA_WITH_CUDA branch of the binding is not exercised by the CPU-only JIT build."""
    from torch.utils.cpp_extension import get_cxx_compiler

    command = [get_cxx_compiler(), "-fsyntax-only", "-std=c++20", *build_config.define_flags(with_cuda=True),
               "-DTORCH_EXTENSION_NAME=msda_check", f"-I{sysconfig.get_paths()['include']}",
               *_torch_includes(), str(build_config.SRC_DIR / "binding.cpp")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command[0]} failed on binding.cpp:\n{result.stderr[-4000:]}"
