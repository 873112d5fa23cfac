"""Shared pieces of the inference entry points (inference_ytvos.py, inference_davis.py, demo.py).

- checkpoint loading for inference, refusing a checkpoint of another method;
- whole-video prediction of one expression, in chunks of ``clip_len`` frames to bound memory, with the
  query slot chosen once per video (time-averaged scores over every chunk) or once per chunk (upstream
  Ref-DAVIS behaviour, spec 11.1 #10);
- running work items on several devices, one worker process per device, with one progress bar.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from datasets.ytvos import clean_caption
from models import build_model
from models.postprocessors import mask_logits_to_original, select_video_query
from models.registry import get_method
from util.checkpoint import is_url, load_checkpoint, load_model_weights, model_state_from_checkpoint
from util.precision import forward_precision

logger = logging.getLogger(__name__)

ARCHITECTURE_FLAGS = ("backbone", "hidden_dim", "dim_feedforward", "enc_layers", "dec_layers", "nheads",
                      "num_queries", "num_feature_levels", "mask_dim", "with_box_refine", "binary",
                      "controller_layers", "dynamic_mask_channels", "text_encoder_type", "dataset_file")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model built from the command line."""


def checkpoint_method(ckpt: dict[str, Any]) -> Optional[str]:
    """The --method a training checkpoint was made with (None for checkpoints that do not record it)."""
    saved = ckpt.get("args")
    return getattr(saved, "method", None) if saved is not None else None


def _architecture_hint(ckpt: dict[str, Any], args: Any) -> str:
    """Flags whose values differ between the checkpoint's training run and this command line."""
    saved = ckpt.get("args")
    if saved is None:
        return "pass the model flags the checkpoint was trained with"
    diffs = [f"--{name} {getattr(saved, name)!r} (given {getattr(args, name, None)!r})" for name in ARCHITECTURE_FLAGS
             if hasattr(saved, name) and getattr(saved, name) != getattr(args, name, None)]
    return ("the checkpoint was trained with " + ", ".join(diffs)) if diffs else "check the model flags"


def load_inference_weights(model: nn.Module, args: Any) -> dict[str, Any]:
    """Load --resume into `model` for inference; returns the checkpoint dict.

    Raises CheckpointMismatchError when the checkpoint records another --method or its tensors do not fit.
    """
    if not getattr(args, "resume", ""):
        raise CheckpointMismatchError("inference needs a trained model: pass --resume CHECKPOINT")
    ckpt = load_checkpoint(args.resume)
    method = checkpoint_method(ckpt)
    if method is not None and method != args.method:
        raise CheckpointMismatchError(f"{args.resume} is a checkpoint of method {method!r} but --method is "
                                      f"{args.method!r}; pass --method {method}")
    missing, unexpected, mismatched = load_model_weights(model, model_state_from_checkpoint(ckpt),
                                                         get_method(args.method).official_key_map)
    if mismatched:
        name, got, want = mismatched[0]
        raise CheckpointMismatchError(f"{args.resume}: {len(mismatched)} tensors do not fit the model, e.g. {name} "
                                      f"{got} in the checkpoint vs {want} here; {_architecture_hint(ckpt, args)}")
    if missing or unexpected:
        logger.warning("%s: %d missing keys (e.g. %s), %d unexpected keys (e.g. %s)", args.resume, len(missing),
                       missing[:3], len(unexpected), unexpected[:3])
    return ckpt


def build_inference_model(args: Any, device: torch.device) -> nn.Module:
    """The model of --method with the --resume weights, on `device`, in eval mode."""
    if not getattr(args, "resume", ""):
        raise CheckpointMismatchError("inference needs a trained model: pass --resume CHECKPOINT")
    if not is_url(args.resume) and not Path(args.resume).is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.resume} (--resume)")
    model, _, _ = build_model(args)
    load_inference_weights(model, args)
    return model.to(device).eval()


def inference_caption(caption: str, args: Any) -> str:
    """The expression as given (upstream inference) or cleaned like training captions (--clean_captions)."""
    return clean_caption(caption) if getattr(args, "clean_captions", False) else caption


def write_folder_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary sibling folder that then replaces `folder` in one rename.

    A folder that exists is therefore complete, which is what lets an interrupted run resume.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_has_files(folder: Path, names: Sequence[str], suffix: str = ".png") -> bool:
    """True if `folder` holds <name><suffix> for every name."""
    return folder.is_dir() and all((folder / f"{name}{suffix}").is_file() for name in names)


# ---------------------------------------------------------------------------------------------- prediction

def chunk_slices(num_frames: int, clip_len: int) -> list[slice]:
    """Consecutive frame ranges of at most clip_len frames (one range for clip_len <= 0)."""
    if clip_len <= 0 or clip_len >= num_frames:
        return [slice(0, num_frames)]
    return [slice(start, min(start + clip_len, num_frames)) for start in range(0, num_frames, clip_len)]


def equal_length_groups(spans: Sequence[slice], limit: int) -> list[list[slice]]:
    """Consecutive runs of at most ``limit`` spans with the same number of frames, in order."""
    groups: list[list[slice]] = []
    for span in spans:
        last = groups[-1] if groups else None
        if last and len(last) < max(limit, 1) and last[0].stop - last[0].start == span.stop - span.start:
            last.append(span)
        else:
            groups.append([span])
    return groups


@torch.no_grad()
def forward_clips(model: nn.Module, clips: Sequence[Tensor], caption: str, size: Sequence[int],
                  device: torch.device, amp: str = "none") -> tuple[list[Tensor], list[Tensor]]:
    """Unpadded clips [T, 3, h, w] of one video (same T and size) as one batch, each still its own clip: per clip
    class logits [T, Q, K] and mask logits [T, Q, h', w'], in float32 (``amp`` 'bf16': computed under autocast)."""
    n = len(clips)
    with forward_precision(device, amp):
        outputs = model([clip.to(device) for clip in clips], [caption] * n,
                        [{"size": torch.as_tensor(size, device=device)}] * n)
    return list(outputs["pred_logits"].float()), list(outputs["pred_masks"].float())


def frame_queries(logits: Tensor, chunks: Sequence[slice], per_chunk: bool) -> Tensor:
    """Query slot of every frame [T]: one for the video (scores averaged over all frames) or one per chunk."""
    spans = chunks if per_chunk else [slice(0, logits.shape[0])]
    queries = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    for span in spans:
        queries[span] = select_video_query(logits[span][None])[0]
    return queries


def pick_query_masks(masks: Tensor, queries: Tensor) -> Tensor:
    """masks [T, Q, h, w], queries [T] -> the chosen slot's masks [T, h, w]."""
    return masks[torch.arange(masks.shape[0], device=masks.device), queries.to(masks.device)]


@torch.no_grad()
def collect_video_outputs(model: nn.Module, load_chunk: Callable[[slice], Tensor], num_frames: int, caption: str,
                          size: Sequence[int], device: torch.device, clip_len: int,
                          store: Optional[torch.device] = None, chunks_per_batch: int = 1,
                          amp: str = "none") -> tuple[Tensor, Tensor, list[slice]]:
    """Run every chunk of a video: (logits [T, Q, K], stride-4 mask logits [T, Q, h', w'], chunks).

    ``load_chunk(span)`` returns the transformed frames of a span; ``store`` is where outputs are kept
    (e.g. the CPU for long videos). Up to ``chunks_per_batch`` consecutive chunks of equal length go through
    the model as one batch: the same outputs in fewer passes for short chunks; 1 bounds memory to one chunk.
    """
    chunks = chunk_slices(num_frames, clip_len)
    logits, masks = [], []
    for group in equal_length_groups(chunks, chunks_per_batch):
        group_logits, group_masks = forward_clips(model, [load_chunk(span) for span in group], caption, size, device,
                                                  amp)
        logits += [x.to(store) if store is not None else x for x in group_logits]
        masks += [x.to(store) if store is not None else x for x in group_masks]
    return torch.cat(logits), torch.cat(masks), chunks


@torch.no_grad()
def predict_expression(model: nn.Module, frames: Tensor, caption: str, size: Sequence[int],
                       orig_size: Sequence[int], device: torch.device, clip_len: int = 0,
                       per_chunk_query: bool = False, chunks_per_batch: int = 1,
                       amp: str = "none") -> tuple[Tensor, Tensor]:
    """Mask probabilities [T, H, W] of one expression over a whole video, and the query slot per frame [T]."""
    logits, masks, chunks = collect_video_outputs(model, lambda span: frames[span], frames.shape[0], caption, size,
                                                  device, clip_len, chunks_per_batch=chunks_per_batch, amp=amp)
    queries = frame_queries(logits, chunks, per_chunk_query)
    chosen = pick_query_masks(masks, queries)
    probs = torch.cat([mask_logits_to_original(chosen[span], size, orig_size) for span in chunks])
    return probs, queries


# ---------------------------------------------------------------------------------------------- workers

ProgressFn = Callable[[int], None]
WorkerFn = Callable[[int, torch.device, list, Any, ProgressFn], None]


def worker_devices(device: str, ngpu: int) -> list[torch.device]:
    """One device per worker: cuda:0..ngpu-1 (wrapping around the visible GPUs), or a single CPU worker."""
    if not str(device).startswith("cuda"):
        if ngpu > 1:
            logger.info("running on %s: one worker process (--ngpu %d applies to GPUs)", device, ngpu)
        return [torch.device(device)]
    available = torch.cuda.device_count()
    if available == 0:
        raise RuntimeError("--device cuda but no GPU is visible; use --device cpu")
    if ngpu > available:
        logger.warning("--ngpu %d but %d GPU(s) visible: workers share GPUs", ngpu, available)
    return [torch.device("cuda", i % available) for i in range(max(1, ngpu))]


def contiguous_shards(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """Split items into `parts` contiguous chunks whose sizes differ by at most one."""
    n = len(items)
    return [list(items[n * i // parts: n * (i + 1) // parts]) for i in range(parts)]


def _worker_main(target: WorkerFn, index: int, device: torch.device, shard: list, context: Any,
                 progress: Any) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"[worker {index}] %(levelname)s %(name)s: %(message)s")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    target(index, device, shard, context, progress.put)


def run_workers(target: WorkerFn, items: Sequence[Any], devices: Sequence[torch.device], context: Any,
                desc: str, unit: str = "item") -> None:
    """Call ``target(index, device, shard, context, progress)`` for each device on its contiguous shard.

    With one device the target runs in this process; with several, each runs in a spawned process (its
    own CUDA context) and reports finished items through ``progress(n)`` to the single progress bar here.
    """
    devices = list(devices)[: max(1, len(items))]
    with tqdm(total=len(items), desc=desc, unit=unit, dynamic_ncols=True) as bar:
        if len(devices) == 1:
            target(0, devices[0], list(items), context, bar.update)
            return
        ctx = mp.get_context("spawn")
        progress = ctx.Queue()
        processes = [ctx.Process(target=_worker_main, args=(target, i, device, shard, context, progress), daemon=False)
                     for i, (device, shard) in enumerate(zip(devices, contiguous_shards(items, len(devices))))]
        for process in processes:
            process.start()
        while any(p.is_alive() for p in processes) or not progress.empty():
            try:
                bar.update(progress.get(timeout=0.5))
            except queue_module.Empty:
                continue
        for process in processes:
            process.join()
    failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"inference worker(s) {failed} failed (exit codes "
                           f"{[processes[i].exitcode for i in failed]}); see their errors above")


def run_pending(target: WorkerFn, todo: Sequence[Any], args: Any, desc: str, unit: str) -> None:
    """run_workers over the --device/--ngpu workers, if there is anything to do, and log the time taken."""
    if not todo:
        return
    start = time.time()
    run_workers(target, todo, worker_devices(args.device, args.ngpu), args, desc=desc, unit=unit)
    logger.info("%s inference: %d %ss in %.1f s", desc, len(todo), unit, time.time() - start)


def cli_main(argv: Optional[Sequence[str]], description: str, run: Callable[[Any], str]) -> int:
    """Entry point of an inference script: parse the shared flags, run, print the result line or the error."""
    from opts import parse_args
    from util.logging import setup_logging

    args = parse_args(argv, description)
    setup_logging(None)
    try:
        message = run(args)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(message)
    return 0
