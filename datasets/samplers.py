"""Samplers and sample wrappers for multi-process training and evaluation, built for exact resume.

:class:`DistributedSampler` shuffles the index list with a generator seeded by ``seed + epoch`` (call
:meth:`DistributedSampler.set_epoch` every epoch) and pads it by wrapping around to a multiple of the
world size. Unlike Deformable-DETR/ReferFormer (one contiguous chunk per rank), ranks take the global
order *interleaved*: with per-rank batch B on W ranks, optimisation step i consumes global positions
[i·W·B, (i+1)·W·B). That makes a step's global batch independent of how it is split across ranks (W
ranks × B equals 1 process × W·B) and lets a run resume mid-epoch at any position, even on another
world size. With ``seed_samples=True`` it yields ``(index, seed)`` pairs: the seed belongs to the
global position, so :class:`SeededSamples` draws the same augmentation for a position whatever the
rank, the number of loader workers, or an interruption.

:class:`EvalDistributedSampler` splits the dataset into contiguous chunks without padding, so no
sample is evaluated twice (and a video's consecutive expressions stay on one rank).
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sized

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from util.dist import get_rank, get_world_size

BAD_SAMPLES_KEY = "bad_samples"
MAX_REPLACEMENTS = 20


class BadSampleError(ValueError):
    """A sample's files or annotations are unusable; the message names the file and the field.

    Datasets raise it (or OSError for unreadable files); with ``--bad_data skip`` :class:`SeededSamples`
    replaces the sample and reports it instead of stopping.
    """


class MissingFileError(BadSampleError, FileNotFoundError):
    """A file that the dataset's metadata lists does not exist."""


def _replicas_and_rank(num_replicas: Optional[int], rank: Optional[int]) -> tuple[int, int]:
    num_replicas = get_world_size() if num_replicas is None else num_replicas
    rank = get_rank() if rank is None else rank
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return num_replicas, rank


class DistributedSampler(Sampler):
    """Epoch-seeded shuffled (or ordered) indices for one rank, interleaved over ranks, equal length per rank.

    ``set_epoch(epoch, start)`` skips the first ``start`` global positions of that epoch (resume); the
    per-rank length then covers what remains.
    """

    def __init__(self, dataset: Sized, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, seed_samples: bool = False):
        self.dataset = dataset
        self.num_replicas, self.rank = _replicas_and_rank(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = seed
        self.seed_samples = seed_samples
        self.size = len(dataset)
        self.total_size = -(-self.size // self.num_replicas) * self.num_replicas
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Reseed the shuffle and skip `start` global positions; all ranks must call it with the same values."""
        if not 0 <= start <= self.total_size:
            raise ValueError(f"start position {start} is outside the epoch [0, {self.total_size}]")
        self.epoch = epoch
        self.start = start
        self.num_samples = (self.total_size - start) // self.num_replicas

    def _order_and_seeds(self) -> tuple[list[int], list[int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        return order.tolist(), seeds.tolist()

    def positions(self) -> range:
        """Global positions (before wrap-around) that this rank takes in the current epoch."""
        first = self.start + self.rank
        return range(first, first + self.num_samples * self.num_replicas, self.num_replicas)

    def __iter__(self) -> Iterator[Any]:
        if self.size == 0:
            return iter(())
        order, seeds = self._order_and_seeds()
        picks = [p % self.size for p in self.positions()]
        if self.seed_samples:
            return iter([(order[p], seeds[p]) for p in picks])
        return iter([order[p] for p in picks])

    def __len__(self) -> int:
        return self.num_samples


class EvalDistributedSampler(Sampler[int]):
    """In-order contiguous chunk of the dataset for one rank; chunks cover it exactly once."""

    def __init__(self, dataset: Sized, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        self.num_replicas, self.rank = _replicas_and_rank(num_replicas, rank)
        size = len(dataset)
        self.start = size * self.rank // self.num_replicas
        self.stop = size * (self.rank + 1) // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch (CPU) RNGs for the block, then restore their previous states.

    Restoring keeps the loading process's own random streams (dropout, when num_workers is 0) untouched.
    """
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class SeededSamples(Dataset):
    """Wraps a dataset for keys ``(index, seed)``: each sample is drawn under its own seed.

    ``bad_data='skip'``: a sample that raises :class:`BadSampleError` or OSError is replaced by another
    one (picked with the same seed) and the reasons travel with the replacement in
    ``target['bad_samples']`` (samples are ``(clip, target dict)``), so the training loop can warn and
    count them per epoch on every rank. ``'error'`` lets the exception through.
    """

    def __init__(self, dataset: Dataset, bad_data: str = "error"):
        if bad_data not in ("error", "skip"):
            raise ValueError(f"bad_data must be 'error' or 'skip', got {bad_data!r}")
        self.dataset = dataset
        self.bad_data = bad_data

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        reasons: list[str] = []
        picker = random.Random(seed)
        for attempt in range(MAX_REPLACEMENTS + 1):
            try:
                with seeded_rngs(seed + attempt):
                    sample = self.dataset[index]
            except (BadSampleError, OSError) as err:
                if self.bad_data == "error":
                    raise
                reasons.append(f"sample {index}: {err}")
                index = picker.randrange(len(self))
                continue
            return _attach_reasons(sample, reasons)
        raise RuntimeError(f"{MAX_REPLACEMENTS + 1} bad samples in a row (--bad_data skip); is the dataset "
                           f"path right? Last errors: {reasons[-3:]}")


def _attach_reasons(sample: Any, reasons: list[str]) -> Any:
    """Record replaced samples in the target dict of a (clip, target) sample."""
    if reasons and isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[1], dict):
        return sample[0], {**sample[1], BAD_SAMPLES_KEY: reasons}
    return sample
