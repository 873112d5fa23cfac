"""Samplers for multi-process training and evaluation.

:class:`DistributedSampler` follows ReferFormer/Deformable-DETR: the index list is shuffled with a
generator seeded by ``seed + epoch`` (call :meth:`set_epoch` every epoch), padded by repetition to a
multiple of the world size, and each rank takes one contiguous chunk.
:class:`EvalDistributedSampler` splits the dataset into contiguous chunks without padding, so no
sample is evaluated twice (and a video's consecutive expressions stay on one rank).
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sized

import torch
from torch.utils.data import Sampler

from util.dist import get_rank, get_world_size


def _replicas_and_rank(num_replicas: Optional[int], rank: Optional[int]) -> tuple[int, int]:
    num_replicas = get_world_size() if num_replicas is None else num_replicas
    rank = get_rank() if rank is None else rank
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return num_replicas, rank


class DistributedSampler(Sampler[int]):
    """Epoch-seeded shuffled (or ordered) indices for one rank, padded to equal length per rank."""

    def __init__(self, dataset: Sized, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0):
        self.dataset = dataset
        self.num_replicas, self.rank = _replicas_and_rank(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(dataset) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        while len(indices) < self.total_size:
            indices += indices[: self.total_size - len(indices)]
        start = self.num_samples * self.rank
        return iter(indices[start:start + self.num_samples])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle; all ranks must call it with the same epoch."""
        self.epoch = epoch


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
