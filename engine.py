"""Training and evaluation loops shared by every method: they only call model, criterion and postprocessors."""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from datasets.samplers import BAD_SAMPLES_KEY, EvalDistributedSampler
from util.dist import all_gather_object, all_reduce_sum, is_main_process, reduce_dict
from util.inference import predict_expression
from util.misc import targets_to
from util.precision import float32_outputs, forward_precision

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when the loss or the gradient norm becomes NaN/inf; the message names the iteration and the terms."""


@dataclass
class NonFiniteBudget:
    """How many non-finite batches may be skipped over the whole run (--skip_nonfinite) and how many were."""

    limit: int = 0
    skipped: int = 0

    def skip_or_raise(self, message: str) -> None:
        """Count one skipped batch (with a warning), or raise NonFiniteLossError once the budget is spent."""
        if self.skipped >= self.limit:
            hint = (f"; {self.skipped} earlier non-finite batches were skipped (--skip_nonfinite {self.limit})"
                    if self.limit else "; --skip_nonfinite N skips up to N such batches")
            raise NonFiniteLossError(message + hint)
        self.skipped += 1
        logger.warning("%s: batch skipped without an optimiser step (%d of --skip_nonfinite %d)", message,
                       self.skipped, self.limit)


class SmoothedMeters:
    """Running averages of scalar metrics (global over the epoch)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def update(self, **values: float) -> None:
        for k, v in values.items():
            self.total[k] += float(v)
            self.count[k] += 1

    def averages(self) -> dict[str, float]:
        return {k: self.total[k] / max(self.count[k], 1) for k in self.total}


def pop_bad_samples(targets: list[dict[str, Any]]) -> int:
    """Remove the replaced-sample reports (--bad_data skip) from the targets, warn about each; returns the count."""
    count = 0
    for target in targets:
        for reason in target.pop(BAD_SAMPLES_KEY, ()):
            logger.warning("bad sample replaced (--bad_data skip): %s", reason)
            count += 1
    return count


def train_one_epoch(model: nn.Module, criterion: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, max_norm: float = 0.0, print_freq: int = 10,
                    on_step: Optional[Callable[[int, dict[str, float]], None]] = None, *,
                    start_iteration: int = 0, nonfinite: Optional[NonFiniteBudget] = None,
                    amp: str = "none") -> dict[str, float]:
    """One pass over data_loader; returns the epoch averages of the weighted loss, each term, lr and grad norm.

    ``start_iteration`` numbers the first batch when resuming mid-epoch (the loader then yields only the
    remaining batches). ``on_step(iteration, stats)`` runs after every optimiser step. A NaN/inf loss or
    gradient norm skips the batch while ``nonfinite`` allows it, else raises NonFiniteLossError (the decision
    uses values reduced over ranks, so every rank takes it). The result also holds ``bad_samples`` (replaced
    samples, summed over ranks) and ``nonfinite_skipped`` (batches skipped in this epoch). ``amp`` 'bf16' runs
    the forward pass under bfloat16 autocast and the criterion on its outputs cast to float32.
    """
    model.train()
    criterion.train()
    meters = SmoothedMeters()
    weight_dict = criterion.weight_dict
    budget = nonfinite if nonfinite is not None else NonFiniteBudget()
    skipped_before, bad_samples = budget.skipped, 0
    remaining = len(data_loader) if hasattr(data_loader, "__len__") else None
    total = None if remaining is None else start_iteration + remaining
    progress = tqdm(data_loader, total=total, initial=start_iteration, desc=f"epoch {epoch}",
                    disable=not is_main_process(), dynamic_ncols=True, leave=False)
    for it, (samples, targets) in enumerate(progress, start=start_iteration):
        bad_samples += pop_bad_samples(targets)
        samples = samples.to(device)
        captions = [t["caption"] for t in targets]
        targets = targets_to(targets, device)
        with forward_precision(device, amp):
            outputs = model(samples, captions, targets)
        loss_dict = criterion(float32_outputs(outputs) if amp != "none" else outputs, targets)
        losses = sum(loss_dict[k] * weight_dict[k] for k in loss_dict if k in weight_dict)

        logged = reduce_dict({k: v.detach() for k, v in loss_dict.items()})
        loss_value = float(sum(logged[k] * weight_dict[k] for k in logged if k in weight_dict))
        if not math.isfinite(loss_value):
            terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(logged.items()))
            budget.skip_or_raise(f"epoch {epoch} iteration {it}: loss is {loss_value} ({terms})")
            continue

        optimizer.zero_grad(set_to_none=True)
        losses.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            budget.skip_or_raise(f"epoch {epoch} iteration {it}: gradient norm is {grad_norm} (loss {loss_value:.4g})")
            continue
        optimizer.step()

        stats = {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm}
        stats.update({k: float(v) for k, v in logged.items()})
        meters.update(**stats)
        if on_step is not None:
            on_step(it, stats)
        if it % print_freq == 0:
            progress.set_postfix(loss=f"{loss_value:.3f}")
            logger.info("epoch %d [%d/%s] loss %.4f lr %.3g grad_norm %.3g", epoch, it, total, loss_value,
                        stats["lr"], grad_norm)
    result = meters.averages()
    result["bad_samples"] = all_reduce_sum(bad_samples)
    result["nonfinite_skipped"] = float(budget.skipped - skipped_before)
    if result["bad_samples"]:
        logger.warning("epoch %d: %d bad samples were replaced (--bad_data skip), see the warnings above", epoch,
                       int(result["bad_samples"]))
    return result


def _frames_masks_j_f(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Mean J and F over the frames of one expression (DAVIS-2017 definitions)."""
    from davis2017.metrics import db_eval_boundary, db_eval_iou

    j = db_eval_iou(gt, pred)
    f = db_eval_boundary(gt, pred)
    return float(np.mean(j)), float(np.mean(f))


@torch.no_grad()
def evaluate_video_expressions(model: nn.Module, postprocessors: dict[str, nn.Module], dataset: Any,
                               device: torch.device, clip_len: int = 0, max_items: int = 0,
                               caption_for: Optional[Callable[[dict], Optional[str]]] = None,
                               chunks_per_batch: int = 1, amp: str = "none") -> dict[str, Any]:
    """Score every (video, expression) of a split with ground truth: J, F and J&F averaged over expressions.

    The whole video is one clip unless ``clip_len`` > 0 (chunks bound memory, each picks its own query slot;
    ``chunks_per_batch`` of them run together, see util.inference.collect_video_outputs). ``caption_for`` may
    replace an item's caption (e.g. with another object's expression); items it maps to None are skipped. Each
    rank scores one contiguous chunk (whole videos stay together, nothing is scored twice) and every rank gets
    the gathered records in dataset order.
    ``amp`` 'bf16' runs the model under bfloat16 autocast (--amp).
    """
    model.eval()
    count = min(len(dataset), max_items) if max_items > 0 else len(dataset)
    mine = EvalDistributedSampler(range(count))
    records = []
    for idx in tqdm(mine, desc="eval", disable=not is_main_process(), dynamic_ncols=True, leave=False):
        item = dataset[idx]
        if item["gt_masks"] is None:
            raise ValueError(f"video {item['video_id']}: no ground-truth annotations to score against")
        caption = item["caption"] if caption_for is None else caption_for(item)
        if caption is None:
            continue
        probs, _ = predict_expression(model, item["frames"], caption, item["size"], item["orig_size"], device,
                                      clip_len, per_chunk_query=True, chunks_per_batch=chunks_per_batch, amp=amp)
        pred = (probs > postprocessors["video"].threshold).cpu().numpy().astype(np.uint8)
        j, f = _frames_masks_j_f(pred, (item["gt_masks"] > 0).astype(np.uint8))
        records.append({"video_id": item["video_id"], "exp_id": item["exp_id"], "j": j, "f": f})
    records = [r for part in all_gather_object(records) for r in part]
    if not records:
        return {"j": float("nan"), "f": float("nan"), "jf": float("nan"), "n": 0, "per_expression": []}
    j = float(np.mean([r["j"] for r in records]))
    f = float(np.mean([r["f"] for r in records]))
    return {"j": j, "f": f, "jf": (j + f) / 2, "n": len(records), "per_expression": records}


