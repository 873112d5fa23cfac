"""Swin / Video-Swin backbones: blocks equal torchvision's independent implementation, the official state-dict
layout (key counts and shapes of the released ReferFormer checkpoints), pretrained loading and the model forward."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.models import swin_transformer as tv_swin
from torchvision.models.video import swin_transformer as tv_video_swin

from rvos_testing import ROOT, tiny_model_flags
from models import build_model
from models.swin_transformer import (SWIN_CONFIGS, PatchMerging, SwinConfig, SwinStage, SwinTransformer,
                                     load_swin_pretrained, relative_position_index)
from opts import parse_args

REFERENCE = ROOT.parent / "shared" / "reference" / "referformer_r50.json"


def _torchvision_blocks(stage: SwinStage, window: list[int], shift: list[int], video: bool) -> list[torch.nn.Module]:
    """torchvision blocks (plain, shifted, ...) carrying the weights of ``stage``'s blocks."""
    blocks = []
    for i, ours in enumerate(stage.blocks):
        dim = ours.norm1.normalized_shape[0]
        attn_layer = tv_video_swin.ShiftedWindowAttention3d if video else tv_swin.ShiftedWindowAttention
        theirs = tv_swin.SwinTransformerBlock(dim, ours.attn.num_heads, window,
                                              shift if i % 2 else [0] * len(window), attn_layer=attn_layer)
        state = {k.replace("mlp.fc1", "mlp.0").replace("mlp.fc2", "mlp.3"): v for k, v in ours.state_dict().items()}
        their_index = theirs.attn.relative_position_index
        assert torch.equal(state["attn.relative_position_index"].flatten(), their_index.flatten())
        state["attn.relative_position_index"] = their_index
        theirs.load_state_dict(state, strict=True)
        blocks.append(theirs.eval())
    return blocks


@pytest.mark.parametrize("size", [(14, 21), (10, 17)])
def test_swin_stage_equals_torchvision(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    stage = SwinStage(32, 2, 4, (7, 7), [0.0, 0.0], downsample=False, use_checkpoint=False).eval()
    for block in stage.blocks:
        torch.nn.init.normal_(block.attn.relative_position_bias_table)
    x = torch.randn(2, *size, 32)
    expected = x
    for block in _torchvision_blocks(stage, [7, 7], [3, 3], video=False):
        expected = block(expected)
    with torch.no_grad():
        torch.testing.assert_close(stage.run_blocks(x), expected.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("frames", [4, 10])
def test_video_swin_stage_equals_torchvision(frames: int) -> None:
    """4 frames: the temporal window shrinks to 4 without shift; 10 frames: window 8, shift 4, padding to 16."""
    torch.manual_seed(0)
    stage = SwinStage(32, 2, 4, (8, 7, 7), [0.0, 0.0], downsample=False, use_checkpoint=False).eval()
    for block in stage.blocks:
        torch.nn.init.normal_(block.attn.relative_position_bias_table)
    x = torch.randn(1, frames, 14, 9, 32)
    expected = x
    for block in _torchvision_blocks(stage, [8, 7, 7], [4, 3, 3], video=True):
        expected = block(expected)
    with torch.no_grad():
        torch.testing.assert_close(stage.run_blocks(x), expected.detach(), rtol=1e-4, atol=1e-5)


def test_patch_merging_equals_torchvision() -> None:
    torch.manual_seed(0)
    ours = PatchMerging(8)
    theirs = tv_swin.PatchMerging(8)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 9, 11, 8)
    torch.testing.assert_close(ours(x), theirs(x))
    video = torch.randn(2, 3, 9, 11, 8)
    torch.testing.assert_close(ours(video), torch.stack([theirs(video[:, t]) for t in range(3)], 1))


def test_relative_position_index_layout() -> None:
    index = relative_position_index((2, 3))
    # token (0, 0) vs token (1, 2): offset (-1, -2) -> ((-1 + 1) * 5) + (-2 + 2) = 0; the reverse pair -> 2*5 + 4
    assert index[0, 5] == 0 and index[5, 0] == 14 and index[0, 0] == 1 * 5 + 2
    assert relative_position_index((8, 7, 7)).max() == 15 * 13 * 13 - 1


def test_video_swin_mixes_time_and_swin_does_not() -> None:
    torch.manual_seed(0)
    small = {"swin": SwinConfig(16, (2, 2), (2, 2), 0.0, (7, 7)),
             "video": SwinConfig(16, (2, 2), (2, 2), 0.0, (8, 7, 7))}
    frames = torch.randn(4, 3, 32, 32)  # 2 clips of 2 frames
    changed = frames.clone()
    changed[1] += 1.0  # second frame of the first clip
    for kind, config in small.items():
        body = SwinTransformer(config).eval()
        before, after = body(frames, 2)["1"], body(changed, 2)["1"]
        first_frame_moved = not torch.allclose(before[0], after[0])
        assert first_frame_moved == (kind == "video"), kind
        torch.testing.assert_close(before[2:], after[2:])  # the other clip never sees it


def _roberta_base_shaped(tmp_path: Path, tiny_roberta: Path) -> Path:
    from transformers import AutoTokenizer, RobertaConfig

    RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_roberta).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("backbone,entries,shapes", [
    ("swin_t_p4w7", 728, {"backbone.0.body.patch_embed.proj.weight": [96, 3, 4, 4],
                          "backbone.0.body.layers.0.blocks.1.attn.relative_position_bias_table": [169, 3],
                          "backbone.0.body.layers.2.blocks.5.attn.relative_position_index": [49, 49],
                          "backbone.0.body.layers.2.downsample.reduction.weight": [768, 1536],
                          "backbone.0.body.norm3.weight": [768],
                          "input_proj.0.0.weight": [256, 192, 1, 1], "input_proj.3.0.weight": [256, 768, 3, 3]}),
    ("video_swin_t_p4w7", 720, {"backbone.0.body.patch_embed.proj.weight": [96, 3, 1, 4, 4],
                                "backbone.0.body.layers.3.blocks.1.attn.relative_position_bias_table": [2535, 24],
                                "backbone.0.body.layers.0.blocks.0.attn.relative_position_index": [392, 392],
                                "backbone.0.body.downsamples.0.reduction.weight": [192, 384],
                                "backbone.0.body.downsamples.2.norm.weight": [1536],
                                "input_proj.2.0.weight": [256, 768, 1, 1]}),
])
def test_state_dict_layout_of_official_checkpoints(tmp_path: Path, tiny_roberta: Path, backbone: str, entries: int,
                                                   shapes: dict[str, list[int]]) -> None:
    """Everything outside the backbone is the R50 model's; the backbone has the released names and shapes."""
    if not REFERENCE.is_file():
        pytest.skip(f"reference manifest not found at {REFERENCE}")
    text = _roberta_base_shaped(tmp_path, tiny_roberta)
    flags = ["--backbone", backbone, "--with_box_refine", "--binary", "--freeze_text_encoder",
             "--text_encoder_init", "config", "--device", "cpu", "--text_encoder_type", str(text)]
    model, _, _ = build_model(parse_args(flags))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    r50 = {k: shape for k, shape, _ in json.loads(REFERENCE.read_text())["state_dict"]}
    assert len(ours) == entries
    outside = {k: s for k, s in ours.items() if not k.startswith("backbone.0.body.")}
    assert sorted(outside) == sorted(k for k in r50 if not k.startswith("backbone.0.body."))
    channels = model.backbone.num_channels
    assert {k: s for k, s in outside.items() if s != r50[k]} == {
        "input_proj.0.0.weight": [256, channels[1], 1, 1], "input_proj.1.0.weight": [256, channels[2], 1, 1],
        "input_proj.2.0.weight": [256, channels[3], 1, 1], "input_proj.3.0.weight": [256, channels[3], 3, 3],
        "pixel_decoder.adapter_1.weight": [256, channels[0], 1, 1]}
    assert {k: ours[k] for k in shapes} == shapes


@pytest.mark.parametrize("name,entries", [("swin_s_p4w7", 357), ("swin_b_p4w7", 357),
                                          ("swin_l_p4w7", 357), ("video_swin_s_p4w7", 349),
                                          ("video_swin_b_p4w7", 349)])
def test_larger_bodies_have_the_released_entry_counts(name: str, entries: int) -> None:
    """Swin-L: 896 - 728 + 189 entries (spec); S/B add 12 blocks of 14 entries to T's third stage."""
    assert len(SwinTransformer(SWIN_CONFIGS[name]).state_dict()) == entries


def test_imagenet_swin_checkpoint_loads(tmp_path: Path) -> None:
    config = SwinConfig(16, (2, 2), (2, 2), 0.0, (7, 7))
    source = SwinTransformer(config)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("norm")}
    state.update({"norm.weight": torch.ones(32), "head.weight": torch.zeros(10, 32),
                  "layers.0.blocks.1.attn_mask": torch.zeros(4, 49, 49)})
    torch.save({"model": state}, tmp_path / "swin_imagenet.pth")
    body = SwinTransformer(config)
    load_swin_pretrained(body, tmp_path / "swin_imagenet.pth")
    torch.testing.assert_close(body.layers[1].blocks[0].attn.qkv.weight, source.layers[1].blocks[0].attn.qkv.weight)
    del state["layers.0.blocks.0.attn.qkv.weight"]
    torch.save({"model": state}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lack 1 entries"):
        load_swin_pretrained(SwinTransformer(config), tmp_path / "partial.pth")


def test_kinetics_video_swin_checkpoint_loads(tmp_path: Path) -> None:
    """Kinetics layout: 'backbone.' prefix, merging inside layers.I.downsample, a final norm, 2-frame patches."""
    config = SwinConfig(16, (2, 2), (2, 2), 0.0, (8, 7, 7))
    source = SwinTransformer(config)
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith("downsamples."):
            stage, rest = key[len("downsamples."):].split(".", 1)
            key = f"layers.{stage}.downsample.{rest}"
        state[f"backbone.{key}"] = value
    state["backbone.patch_embed.proj.weight"] = torch.randn(16, 3, 2, 4, 4)
    state.update({"backbone.norm.weight": torch.ones(32), "backbone.norm.bias": torch.zeros(32),
                  "cls_head.fc_cls.weight": torch.zeros(400, 32)})
    torch.save({"state_dict": state}, tmp_path / "kinetics.pth")
    body = SwinTransformer(config)
    load_swin_pretrained(body, tmp_path / "kinetics.pth")
    torch.testing.assert_close(body.patch_embed.proj.weight,
                               state["backbone.patch_embed.proj.weight"].sum(2, keepdim=True))
    torch.testing.assert_close(body.downsamples[0].reduction.weight, source.downsamples[0].reduction.weight)


def test_swin_needs_a_checkpoint_path_not_imagenet(tiny_roberta: Path) -> None:
    flags = tiny_model_flags(tiny_roberta) + ["--backbone", "swin_t_p4w7", "--backbone_pretrained", "imagenet"]
    with pytest.raises(ValueError, match="no download for Swin weights"):
        build_model(parse_args(flags))


@pytest.mark.parametrize("backbone", ["swin_t_p4w7", "video_swin_t_p4w7"])
def test_referformer_trains_with_swin(tiny_roberta: Path, backbone: str) -> None:
    """Forward, losses and backward of a small ReferFormer on (Video-)Swin-T; activation checkpointing gives the
    same gradients."""
    flags = tiny_model_flags(tiny_roberta) + ["--backbone", backbone, "--lr_backbone", "1e-5"]
    torch.manual_seed(0)
    clips = [torch.randn(2, 3, 64, 48), torch.randn(2, 3, 56, 64)]
    targets = [{"labels": torch.zeros(2, dtype=torch.long), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]] * 2),
                "masks": torch.zeros(2, 64, 64), "valid": torch.ones(2, dtype=torch.long),
                "size": torch.tensor([64, 64]), "orig_size": torch.tensor([64, 64])} for _ in clips]
    for t in targets:
        t["masks"][:, 20:40, 20:30] = 1
    grads = []
    for extra in ([], ["--use_checkpoint"]):
        torch.manual_seed(0)
        model, criterion, _ = build_model(parse_args(flags + extra))
        outputs = model(clips, ["a red ball", "the dog"], targets)
        assert outputs["pred_masks"].shape[:3] == (2, 2, 3)
        losses = criterion(outputs, targets)
        sum(losses[k] * criterion.weight_dict[k] for k in losses if k in criterion.weight_dict).backward()
        grad = model.backbone[0].body.layers[0].blocks[1].attn.qkv.weight.grad
        assert grad is not None and grad.abs().sum() > 0
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1])
