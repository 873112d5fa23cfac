"""MSDeformAttn: parameter layout and init, both return conventions, reference kinds, padding mask."""
from __future__ import annotations

import pytest
import torch

from models.ops.modules import MSDeformAttn

SHAPES = torch.tensor([[6, 5], [3, 4], [2, 2]])
LEVEL_START = torch.tensor([0, 30, 42])
TOKENS = 46


def _inputs(batch: int = 2, queries: int = 7, d_model: int = 32, ref_dims: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, queries, d_model, generator=generator)
    reference = torch.rand(batch, queries, 3, ref_dims, generator=generator)
    memory = torch.randn(batch, TOKENS, d_model, generator=generator)
    return query, reference, memory


def _module(**kwargs) -> MSDeformAttn:
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2, **kwargs)
    with torch.no_grad():  # non-trivial offsets and weights so every code path matters
        module.sampling_offsets.weight.normal_(0, 0.3)
        module.attention_weights.weight.normal_(0, 0.3)
    return module


def test_parameter_shapes_match_official_checkpoints() -> None:
    shapes = {k: tuple(v.shape) for k, v in MSDeformAttn(256, 4, 8, 4).state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (256, 256), "sampling_offsets.bias": (256,),
        "attention_weights.weight": (128, 256), "attention_weights.bias": (128,),
        "value_proj.weight": (256, 256), "value_proj.bias": (256,),
        "output_proj.weight": (256, 256), "output_proj.bias": (256,),
    }


def test_init_puts_points_on_a_ring_of_head_directions() -> None:
    module = MSDeformAttn(256, 4, 8, 4)
    bias = module.sampling_offsets.bias.view(8, 4, 4, 2)  # (head, level, point, xy)
    torch.testing.assert_close(bias[0, 2], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]))
    torch.testing.assert_close(bias[1, 0, 0], torch.tensor([1.0, 1.0]))  # 45 degrees, max-abs normalised
    torch.testing.assert_close(bias[6, 3, 1], torch.tensor([0.0, -2.0]), atol=1e-6, rtol=0)
    assert not module.sampling_offsets.weight.any() and not module.attention_weights.weight.any()
    assert not module.attention_weights.bias.any() and not module.value_proj.bias.any()


def test_rejects_d_model_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=30, n_heads=8)


@pytest.mark.parametrize("ref_dims", [2, 4])
def test_return_conventions(ref_dims: int) -> None:
    query, reference, memory = _inputs(ref_dims=ref_dims)
    output = _module()(query, reference, memory, SHAPES, LEVEL_START)
    output_too, locations, weights = _module(return_sampling=True)(query, reference, memory, SHAPES, LEVEL_START)
    assert output.shape == (2, 7, 32)
    torch.testing.assert_close(output, output_too)
    assert locations.shape == (2, 7, 4, 3, 2, 2) and weights.shape == (2, 7, 4, 3, 2)
    torch.testing.assert_close(weights.sum((-1, -2)), torch.ones(2, 7, 4))


def test_point_and_box_references_place_samples_as_specified() -> None:
    module = _module(return_sampling=True)
    query, reference, memory = _inputs(ref_dims=4)
    offsets = module.sampling_offsets(query).view(2, 7, 4, 3, 2, 2)
    _, locations, _ = module(query, reference, memory, SHAPES, LEVEL_START)
    box = reference[:, :, None, :, None]
    torch.testing.assert_close(locations, box[..., :2] + offsets / 2 * box[..., 2:] * 0.5)
    _, locations, _ = module(query, reference[..., :2], memory, SHAPES, LEVEL_START)
    per_level_wh = torch.tensor([[5.0, 6.0], [4.0, 3.0], [2.0, 2.0]])[None, None, None, :, None]
    torch.testing.assert_close(locations, reference[:, :, None, :, None, :2] + offsets / per_level_wh)


def test_padding_mask_removes_the_influence_of_padded_tokens() -> None:
    module = _module()
    query, reference, memory = _inputs()
    mask = torch.zeros(2, TOKENS, dtype=torch.bool)
    mask[0, 20:30] = True
    mask[1, 44:] = True
    changed = memory.clone()
    changed[mask] = 1e3 * torch.randn(int(mask.sum()), 32)
    masked = module(query, reference, memory, SHAPES, LEVEL_START, mask)
    torch.testing.assert_close(module(query, reference, changed, SHAPES, LEVEL_START, mask), masked)
    assert not torch.allclose(module(query, reference, changed, SHAPES, LEVEL_START), masked)


def test_invalid_inputs_raise_clear_errors() -> None:
    module = _module()
    query, reference, memory = _inputs()
    with pytest.raises(ValueError, match="45 tokens but input_spatial_shapes sum to 46"):
        module(query, reference, memory[:, :-1], SHAPES, LEVEL_START)
    with pytest.raises(ValueError, match="end in 2 .* or 4"):
        module(query, reference[..., :1], memory, SHAPES, LEVEL_START)


@pytest.mark.parametrize("impl", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_compiled_and_pytorch_paths_train_identically(use_impl, impl: str) -> None:
    device = "cuda" if impl == "cuda" else "cpu"
    query, reference, memory = (t.double().to(device) for t in _inputs(ref_dims=4))
    results = []
    for chosen in (impl, "pytorch"):
        use_impl(chosen)
        module = _module().double().to(device)
        output = module(query, reference, memory, SHAPES.to(device), LEVEL_START.to(device))
        output.square().sum().backward()
        results.append([output] + [p.grad for p in module.parameters()])
    for ours, reference_result in zip(*results):
        torch.testing.assert_close(ours, reference_result, rtol=0, atol=1e-10)
