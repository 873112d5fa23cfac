"""``python -m models.ops.info``: which deformable attention implementation is active, and why.

Building (or loading the cached build) happens here exactly as on first use; ``--no-build`` only
reports the configuration.
"""
from __future__ import annotations

import argparse

import torch

from . import backend, build_config


def describe_environment() -> list[tuple[str, str]]:
    """What decides the choice: the request, torch, the GPU and the CUDA toolkit."""
    problem = build_config.cuda_build_problem()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
    return [
        (backend.IMPL_ENV, backend.requested_impl()),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"),
        ("GPU", gpu),
        ("CUDA toolkit", build_config.cuda_home() or "not found"),
        ("CUDA kernel buildable", "yes" if problem is None else f"no ({problem})"),
        ("CPU threads", str(torch.get_num_threads())),
    ]


def describe_backend(resolved: backend.Backend) -> list[tuple[str, str]]:
    """The resolved implementation per device type and where it came from."""
    rows = [("CPU tensors", resolved.implementation_for(torch.device("cpu")))]
    if resolved.requested != "cpu":
        rows.append(("CUDA tensors", resolved.implementation_for(torch.device("cuda"))))
    rows += [("compiled op", resolved.origin), ("why", resolved.reason)]
    if resolved.extension is not None:
        rows += [("module file", str(getattr(resolved.extension, "__file__", "?"))),
                 ("build info", str(resolved.extension.build_info()))]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-build", action="store_true", help="report the configuration without building")
    args = parser.parse_args(argv)
    rows = describe_environment()
    if not args.no_build:
        rows += describe_backend(backend.get_backend())
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}} : {value}")


if __name__ == "__main__":
    main()
