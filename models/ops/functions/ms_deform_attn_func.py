"""The multi-scale deformable attention op: reference implementation, autograd Function, dispatcher.

Shapes (N batch, S = sum of H_l*W_l value tokens, M heads, D channels per head, Lq queries, L levels,
P points): value [N, S, M, D]; spatial_shapes [L, 2] int64 (H, W); level_start_index [L] int64;
sampling_locations [N, Lq, M, L, P, 2] as (x, y) in [0, 1] of the padded map; attention_weights
[N, Lq, M, L, P]; output [N, Lq, M*D]. A sample is bilinear with zero padding and pixel centres at
(i + 0.5) / size, i.e. ``grid_sample(align_corners=False, padding_mode="zeros")`` at ``2 * loc - 1``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import backend


def ms_deform_attn_core_pytorch(value: Tensor, value_spatial_shapes: Tensor, sampling_locations: Tensor,
                                attention_weights: Tensor) -> Tensor:
    """Pure-PyTorch op (autograd-differentiable, any device); the reference the kernels are tested against.

    It materialises every sample as an [N*M, D, Lq, L*P] tensor, hence the compiled kernels.
    """
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in value_spatial_shapes.tolist()]
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for level, (h, w) in enumerate(shapes):
        level_value = values[level].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    output = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * d, lq)
    return output.transpose(1, 2).contiguous()


class MSDeformAttnFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled kernels (CPU or CUDA, chosen by the tensors' device).

    Gradients flow to value, sampling_locations and attention_weights; ``im2col_step`` is accepted for
    compatibility with the original signature and has no effect (our kernels need no batch chunking).
    """

    @staticmethod
    def forward(ctx, value: Tensor, value_spatial_shapes: Tensor, value_level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor, im2col_step: int) -> Tensor:
        extension = backend.compiled_extension()
        ctx.im2col_step = im2col_step
        ctx.save_for_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations,
                              attention_weights)
        return extension.ms_deform_attn_forward(value, value_spatial_shapes, value_level_start_index,
                                                sampling_locations, attention_weights, im2col_step)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        value, shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = backend.compiled_extension().ms_deform_attn_backward(
            value, shapes, level_start_index, sampling_locations, attention_weights, grad_output.contiguous(),
            ctx.im2col_step)
        return grad_value, None, None, grad_locations, grad_weights, None


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
                   attention_weights: Tensor, im2col_step: int = 64) -> Tensor:
    """Multi-scale deformable attention with the best available implementation for ``value.device``.

    The first call builds (or loads from cache) the compiled op; see ``models/ops/backend.py``. Floating
    inputs of mixed precision are promoted to a common dtype.
    """
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    value, sampling_locations, attention_weights = (t.to(dtype) for t in (value, sampling_locations,
                                                                          attention_weights))
    if backend.implementation_for(value.device) == "pytorch":
        return ms_deform_attn_core_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
    return MSDeformAttnFunction.apply(
        value.contiguous(),
        spatial_shapes.to(device=value.device, dtype=torch.long).contiguous(),
        level_start_index.to(device=value.device, dtype=torch.long).contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        im2col_step,
    )
