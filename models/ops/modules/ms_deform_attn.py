"""MSDeformAttn: the multi-scale deformable attention layer of Deformable-DETR and ReferFormer.

Parameter names and layouts match the official checkpoints: sampling_offsets output index
((head * n_levels + level) * n_points + point) * 2 + xy, attention_weights index
(head * n_levels + level) * n_points + point, value channels split head-major.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..functions import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` learned sampling points around its reference point on each level.

    ``return_sampling=False`` (Deformable-DETR convention) makes ``forward`` return the output only;
    ``True`` (ReferFormer convention) returns ``(output, sampling_locations, attention_weights)``.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 return_sampling: bool = False):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.return_sampling = return_sampling
        self.im2col_step = 64
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Offsets start on a ring of directions per head (point k at distance k+1); uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        distances = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = directions.view(self.n_heads, 1, 1, 2) * distances
        grid = grid.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor,
                input_spatial_shapes: Tensor, input_level_start_index: Tensor,
                input_padding_mask: Optional[Tensor] = None) -> Union[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """query [N, Lq, C]; reference_points [N, Lq, L, 2] (x, y) or [N, Lq, L, 4] (cx, cy, w, h) in [0, 1];
        input_flatten [N, S, C]; input_spatial_shapes [L, 2] (H, W); input_level_start_index [L];
        input_padding_mask [N, S] with True at padding. Returns [N, Lq, C] (see ``return_sampling``).
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        expected = int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum())
        if expected != s:
            raise ValueError(f"input_flatten has {s} tokens but input_spatial_shapes sum to {expected}")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        locations = self._sampling_locations(reference_points, offsets, input_spatial_shapes)
        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights,
                                self.im2col_step)
        output = self.output_proj(output)
        if self.return_sampling:
            return output, locations, weights
        return output

    def _sampling_locations(self, reference_points: Tensor, offsets: Tensor, spatial_shapes: Tensor) -> Tensor:
        """Offsets are in pixels of each level for point references, in box half-sizes for box references."""
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
            return reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        if reference_points.shape[-1] == 4:
            return (reference_points[:, :, None, :, None, :2]
                    + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        raise ValueError(f"reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) values, "
                         f"got shape {tuple(reference_points.shape)}")
