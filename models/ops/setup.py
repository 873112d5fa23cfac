"""Ahead-of-time build of the deformable attention extension: ``cd models/ops && python setup.py build install``.

Builds CUDA whenever torch has CUDA and a matching toolkit (nvcc + headers) is found, with or without a
visible GPU, for every arch torch itself targets that this nvcc supports (override with
TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0"). Otherwise builds the CPU kernel only. The installed module is
``MultiScaleDeformableAttention``; ``models.ops`` uses it when it was built from the same sources.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build_config  # noqa: E402  (sibling module, loaded by path so no package import is needed)

logger = logging.getLogger("msda.setup")


def extension_kwargs(with_cuda: bool) -> dict:
    """Sources (relative to this folder, as setuptools requires) and flags shared with the JIT build."""
    sources = [str(p.relative_to(HERE)) for p in build_config.source_files(with_cuda)]
    compile_args = {"cxx": [*build_config.cxx_flags(), *build_config.define_flags(with_cuda)]}
    if with_cuda:
        compile_args["nvcc"] = [*build_config.nvcc_flags(), *build_config.define_flags(with_cuda),
                                *build_config.cuda_arch_flags(build_config.nvcc_path(), portable=True)]
    return {"name": build_config.PREBUILT_MODULE_NAME, "sources": sources,
            "include_dirs": [str(build_config.SRC_DIR)], "extra_compile_args": compile_args,
            "extra_link_args": build_config.ld_flags()}


def main() -> None:
    os.chdir(HERE)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    problem = build_config.cuda_build_problem()
    with_cuda = problem is None
    if with_cuda:
        logger.info("building CPU and CUDA kernels with the toolkit at %s", build_config.point_torch_at_cuda_home())
    else:
        logger.info("building the CPU kernel only: %s", problem)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    extension = (CUDAExtension if with_cuda else CppExtension)(**extension_kwargs(with_cuda))
    setup(
        name=build_config.PREBUILT_MODULE_NAME,
        version="2.0.0",
        description="Multi-scale deformable attention (CPU and CUDA) for models/ops",
        ext_modules=[extension],
        cmdclass={"build_ext": BuildExtension},
    )


if __name__ == "__main__":
    main()
