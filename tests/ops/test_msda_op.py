"""The compiled kernels equal the pure-PyTorch reference (forward and gradients) on awkward shapes."""
from __future__ import annotations

import pytest
import torch

from models.ops import backend
from models.ops.functions import MSDeformAttnFunction, ms_deform_attn, ms_deform_attn_core_pytorch

from tests.ops.msda_cases import COMPILED_IMPLS, make_op_inputs

# Several levels of different sizes, including a 1x1 and a non-square one.
SHAPES = [(6, 5), (3, 4), (2, 2), (1, 1)]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.mark.parametrize("impl,device", COMPILED_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("channels", [1, 8, 30, 32, 64, 71])
def test_forward_matches_reference(use_impl, impl: str, device: str, dtype: torch.dtype, channels: int) -> None:
    use_impl(impl)
    # batch 67 > im2col_step 64 and not a multiple of it (the original op rejected this).
    inputs = make_op_inputs(67, 2, channels, 3, SHAPES, 2, dtype=dtype, device=device)
    output = ms_deform_attn(*inputs, im2col_step=64)
    expected = ms_deform_attn_core_pytorch(inputs.value, inputs.spatial_shapes, inputs.sampling_locations,
                                           inputs.attention_weights)
    assert backend.implementation_for(inputs.value.device) == impl
    assert output.shape == (67, 3, 2 * channels) and output.dtype == dtype
    torch.testing.assert_close(output, expected, rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("impl,device", COMPILED_IMPLS)
@pytest.mark.parametrize("channels", [1, 30, 32, 71, 1025])
def test_gradients_match_reference_autograd(use_impl, impl: str, device: str, channels: int) -> None:
    use_impl(impl)
    inputs = make_op_inputs(3, 2, channels, 4, SHAPES, 3, device=device, seed=1)
    leaves = [t.clone().requires_grad_(True) for t in (inputs.value, inputs.sampling_locations,
                                                        inputs.attention_weights)]
    grad_output = torch.randn(3, 4, 2 * channels, dtype=torch.float64, device=device)
    ours = torch.autograd.grad(ms_deform_attn(leaves[0], inputs.spatial_shapes, inputs.level_start_index,
                                              leaves[1], leaves[2]), leaves, grad_output)
    expected = torch.autograd.grad(ms_deform_attn_core_pytorch(leaves[0], inputs.spatial_shapes, leaves[1],
                                                               leaves[2]), leaves, grad_output)
    for name, got, want in zip(("value", "sampling_locations", "attention_weights"), ours, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("impl,device", COMPILED_IMPLS)
@pytest.mark.parametrize("channels", [3, 32])
def test_gradcheck(use_impl, impl: str, device: str, channels: int) -> None:
    use_impl(impl)
    inputs = make_op_inputs(2, 2, channels, 3, [(4, 3), (2, 2)], 2, device=device, seed=2)

    def op(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return MSDeformAttnFunction.apply(value, inputs.spatial_shapes, inputs.level_start_index, locations,
                                          weights, 64)

    leaves = tuple(t.clone().requires_grad_(True) for t in (inputs.value, inputs.sampling_locations,
                                                            inputs.attention_weights))
    assert torch.autograd.gradcheck(op, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl,device", COMPILED_IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_reduced_precision_forward_and_backward(use_impl, impl: str, device: str, dtype: torch.dtype) -> None:
    use_impl(impl)
    inputs = make_op_inputs(2, 2, 16, 5, SHAPES, 2, dtype=torch.float32, device=device, seed=3)
    low = [t.to(dtype) if t.is_floating_point() else t for t in inputs]
    output = ms_deform_attn(*low)
    expected = ms_deform_attn_core_pytorch(*(t.float() if t.is_floating_point() else t for t in
                                             (low[0], low[1], low[3], low[4])))
    assert output.dtype == dtype
    torch.testing.assert_close(output.float(), expected, rtol=2e-2, atol=2e-2)
    value = low[0].clone().requires_grad_(True)
    ms_deform_attn(value, *low[1:]).sum().backward()
    assert value.grad.dtype == dtype and torch.isfinite(value.grad.float()).all()


@pytest.mark.parametrize("impl", ["cpu", "pytorch"])
def test_forward_accepts_mixed_precision_by_promotion(use_impl, impl: str) -> None:
    use_impl(impl)
    inputs = make_op_inputs(2, 2, 8, 3, SHAPES, 2, dtype=torch.float32)
    output = ms_deform_attn(inputs.value, inputs.spatial_shapes, inputs.level_start_index,
                            inputs.sampling_locations.double(), inputs.attention_weights)
    assert output.dtype == torch.float64


def test_kernel_rejects_inconsistent_inputs(use_impl) -> None:
    use_impl("cpu")
    inputs = make_op_inputs(2, 2, 4, 3, SHAPES, 2)
    with pytest.raises(RuntimeError, match="attn_weight"):
        ms_deform_attn(inputs.value, inputs.spatial_shapes, inputs.level_start_index, inputs.sampling_locations,
                       inputs.attention_weights[:, :2])
    overlapping = inputs.level_start_index.clone()
    overlapping[1] = 1
    with pytest.raises(RuntimeError, match="overlap"):
        ms_deform_attn(inputs.value, inputs.spatial_shapes, overlapping, inputs.sampling_locations,
                       inputs.attention_weights)
    with pytest.raises(RuntimeError, match="outside value's S"):
        ms_deform_attn(inputs.value[:, :-1], inputs.spatial_shapes, inputs.level_start_index,
                       inputs.sampling_locations, inputs.attention_weights)
