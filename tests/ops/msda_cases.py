"""Shared cases of the deformable attention tests: random op inputs and the compiled implementations."""
from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

class OpInputs(NamedTuple):
    value: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    sampling_locations: torch.Tensor
    attention_weights: torch.Tensor


def make_op_inputs(batch: int, heads: int, channels: int, queries: int, shapes: list[tuple[int, int]], points: int,
                   dtype: torch.dtype = torch.float64, device: str = "cpu", seed: int = 0) -> OpInputs:
    """Random op inputs covering the edge cases: locations from -0.3 to 1.3 (partly and wholly outside the
    map), a few points far outside, value rows zeroed as padding, weights normalised per head."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    tokens, levels = int(sizes.sum()), len(shapes)
    value = torch.randn(batch, tokens, heads, channels, generator=generator, dtype=torch.float64)
    padding = torch.rand(batch, tokens, generator=generator) < 0.2
    value[padding] = 0.0
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=torch.float64)
    locations = locations * 1.6 - 0.3
    locations.view(-1, 2)[::7] = torch.tensor([5.0, -3.0], dtype=torch.float64)
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=torch.float64) + 1e-5
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return OpInputs(*(t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
                      for t in (value, spatial_shapes, level_start_index, locations, weights)))


COMPILED_IMPLS = [pytest.param("cpu", "cpu", id="cpu"),
                  pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.gpu)]
