"""Compiled multi-scale deformable attention vs the pure-PyTorch grid_sample path, side by side.

    python bench/bench_msda.py [--threads 2] [--repeats 5] [--cases encoder decoder] [--no-memory]

Shapes are ReferFormer's with 5 frames of a 360x640 input: levels 45x80, 23x40, 12x20, 6x10; 8 heads
of 32 channels; 4 points. "encoder": every encoder token is a query (Lq = S = 4820). "decoder": 5
queries per frame. Sampling locations are each query's reference point plus offsets of about two
pixels, as in a trained model, so memory access has the locality the real op sees.

Both implementations run in this process, interleaved, and the table gives the median wall time of
--repeats runs. "fwd" is a forward without autograd; "fwd+bwd" is a forward and a backward giving
gradients for value, sampling locations and attention weights.

Peak memory on the CPU (Linux) is measured in a fresh subprocess per cell: once the inputs exist and the
extension is loaded, freed heap is returned to the OS (malloc_trim), the kernel's peak-RSS mark is reset
(``echo 5 > /proc/self/clear_refs``), one call runs, and the peak resident set (VmHWM) minus the RSS
before the call is reported. It counts every byte the call touches (tensors and kernel scratch).
torch's CPU allocator keeps no peak statistics, tracemalloc cannot see it, and ``getrusage`` maxrss
cannot be reset (Linux even carries the parent's peak into a child's ru_maxrss).
On a GPU the same cells are timed with CUDA synchronisation and the memory is
``torch.cuda.max_memory_allocated`` above the inputs.
"""
from __future__ import annotations

import argparse
import json
import os
import ctypes
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models.ops import backend  # noqa: E402
from models.ops.functions import MSDeformAttnFunction, ms_deform_attn_core_pytorch  # noqa: E402

LEVELS = [(45, 80), (23, 40), (12, 20), (6, 10)]
FRAMES, HEADS, CHANNELS, POINTS = 5, 8, 32, 4
QUERIES = {"encoder": None, "decoder": 5}  # None: one query per encoder token
PASSES = ("fwd", "fwd+bwd")
Inputs = tuple[torch.Tensor, ...]


def make_inputs(case: str, device: str, seed: int = 0) -> Inputs:
    """value, spatial shapes, level starts, sampling locations, attention weights of one case."""
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(LEVELS, dtype=torch.long)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    tokens, levels = int(sizes.sum()), len(LEVELS)
    if QUERIES[case] is None:
        centres = [torch.stack(torch.meshgrid((torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h,
                                              indexing="xy"), -1).reshape(-1, 2) for h, w in LEVELS]
        reference = torch.cat(centres)[None].expand(FRAMES, -1, -1)
    else:
        reference = torch.rand(FRAMES, QUERIES[case], 2, generator=generator)
    queries = reference.shape[1]
    pixel = torch.tensor([[1.0 / w, 1.0 / h] for h, w in LEVELS])  # (x, y) size of a pixel per level
    offsets = torch.randn(FRAMES, queries, HEADS, levels, POINTS, 2, generator=generator) * 2.0 * pixel[:, None]
    locations = reference[:, :, None, None, None, :] + offsets
    weights = torch.randn(FRAMES, queries, HEADS, levels * POINTS, generator=generator).softmax(-1)
    weights = weights.view(FRAMES, queries, HEADS, levels, POINTS)
    value = torch.randn(FRAMES, tokens, HEADS, CHANNELS, generator=generator)
    return tuple(t.to(device) for t in (value, shapes, starts, locations.contiguous(), weights))


def compiled_op(value, shapes, starts, locations, weights) -> torch.Tensor:
    return MSDeformAttnFunction.apply(value, shapes, starts, locations, weights, 64)


def pytorch_op(value, shapes, starts, locations, weights) -> torch.Tensor:
    return ms_deform_attn_core_pytorch(value, shapes, locations, weights)


IMPLS: dict[str, Callable[..., torch.Tensor]] = {"pytorch": pytorch_op, "compiled": compiled_op}


def make_step(op: Callable[..., torch.Tensor], inputs: Inputs, pass_name: str) -> Callable[[], None]:
    """One call of the op: forward only, or forward and backward to all three differentiable inputs."""
    value, shapes, starts, locations, weights = inputs
    if pass_name == "fwd":
        def forward() -> None:
            with torch.no_grad():
                op(value, shapes, starts, locations, weights)
        return forward
    leaves = [t.detach().clone().requires_grad_(True) for t in (value, locations, weights)]
    grad = torch.randn(value.shape[0], locations.shape[1], HEADS * CHANNELS, device=value.device)

    def forward_backward() -> None:
        output = op(leaves[0], shapes, starts, leaves[1], leaves[2])
        torch.autograd.grad(output, leaves, grad)
    return forward_backward


def time_interleaved(steps: dict[str, Callable[[], None]], repeats: int, device: str) -> dict[str, float]:
    """Median milliseconds per implementation, alternating them so load changes hit both alike.

    Cells that take milliseconds get more repeats (up to 100, about 2 s) so the median is stable.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    start = time.perf_counter()
    for step in steps.values():
        step()  # warm-up
    warm_up_s = time.perf_counter() - start
    repeats = max(repeats, min(100, int(2.0 / max(warm_up_s, 1e-3))))
    for _ in range(repeats):
        for name, step in steps.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def cpu_peak_mib_in_subprocess(case: str, pass_name: str, impl: str, threads: int) -> float:
    """Peak resident memory added by one call, measured in a fresh interpreter (see module docstring)."""
    command = [sys.executable, __file__, "--child-memory", case, pass_name, impl, "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def release_free_heap() -> None:
    """Return freed heap memory to the OS so the measured call cannot hide in it (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def warm_up_once(op: Callable[..., torch.Tensor], pass_name: str) -> None:
    """One tiny call first, so thread-pool start-up and first-touched code pages are not counted."""
    value, shapes, starts, locations, weights = make_inputs("decoder", "cpu")
    tiny_levels = torch.tensor([[2, 2]]), torch.zeros(1, dtype=torch.long)
    make_step(op, (value[:1, :4], *tiny_levels, locations[:1, :, :, :1], weights[:1, :, :, :1]), pass_name)()


def child_memory(case: str, pass_name: str, impl: str) -> None:
    """Subprocess body: print, as JSON, how far one call raises the resident set above its starting size."""
    backend.get_backend()
    step = make_step(IMPLS[impl], make_inputs(case, "cpu"), pass_name)
    warm_up_once(IMPLS[impl], pass_name)
    release_free_heap()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    before = _status_kib("VmRSS")
    step()
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024.0}))


def cuda_peak_mib(step: Callable[[], None]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_device(device: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    for case in args.cases:
        inputs = make_inputs(case, device)
        for pass_name in PASSES:
            steps = {name: make_step(op, inputs, pass_name) for name, op in IMPLS.items()}
            row = {"device": device, "case": case, "pass": pass_name,
                   "queries": int(inputs[3].shape[1]), **{f"{k}_ms": v for k, v in
                                                         time_interleaved(steps, args.repeats, device).items()}}
            if device == "cuda":
                row.update({f"{name}_peak_mib": cuda_peak_mib(step) for name, step in steps.items()})
            elif not args.no_memory:
                row.update({f"{name}_peak_mib": cpu_peak_mib_in_subprocess(case, pass_name, name, args.threads)
                            for name in IMPLS})
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    header = (f"{'device':<6} {'case':<8} {'pass':<8} {'Lq':>5} {'pytorch ms':>11} {'compiled ms':>12} "
              f"{'speed-up':>9} {'pytorch MiB':>12} {'compiled MiB':>13} {'mem ratio':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        memory = ""
        if "pytorch_peak_mib" in row:
            ratio = row["pytorch_peak_mib"] / max(row["compiled_peak_mib"], 1e-3)
            ratio_text = f"{ratio:>9.1f}x" if ratio < 100 else f"{'>100x':>10}"
            memory = f" {row['pytorch_peak_mib']:>12.1f} {row['compiled_peak_mib']:>13.1f} {ratio_text}"
        print(f"{row['device']:<6} {row['case']:<8} {row['pass']:<8} {row['queries']:>5} {row['pytorch_ms']:>11.1f} "
              f"{row['compiled_ms']:>12.1f} {row['pytorch_ms'] / row['compiled_ms']:>8.1f}x{memory}")


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    extension = backend.compiled_extension()
    build = extension.build_info()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}"
            f"{gpu}; compiled op: {extension.__name__} (CPU ISA {build['cpu_isa']}, CUDA {build['with_cuda']})")


def write_json(rows: list[dict], path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(rows, indent=2))
    os.replace(temporary, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    parser.add_argument("--cases", nargs="+", choices=sorted(QUERIES), default=["encoder", "decoder"])
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory subprocesses")
    parser.add_argument("--no-cuda", action="store_true", help="skip the GPU timings even if a GPU is visible")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--child-memory", nargs=3, metavar=("CASE", "PASS", "IMPL"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    os.environ[backend.IMPL_ENV] = "cuda" if use_cuda else "cpu"  # forced: a failed build raises
    if args.child_memory:
        child_memory(*args.child_memory)
        return
    print(describe_machine())
    rows = run_device("cpu", args)
    if use_cuda:
        rows += run_device("cuda", args)
    print_table(rows)
    if args.json:
        write_json(rows, args.json)


if __name__ == "__main__":
    main()
