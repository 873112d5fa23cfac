"""ReferFormer model: official state-dict manifest, output shapes, checkpoint loading and a learning sanity check."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rvos_testing import ROOT
from models import build_model
from opts import parse_args
from util.misc import nested_tensor_from_videos_list

REFERENCE = ROOT.parent / "shared" / "reference" / "referformer_r50.json"
R50_FLAGS = ["--backbone", "resnet50", "--with_box_refine", "--binary", "--freeze_text_encoder",
             "--backbone_pretrained", "none", "--text_encoder_init", "config", "--device", "cpu"]


@pytest.fixture(scope="module")
def roberta_base_shaped(tmp_path_factory: pytest.TempPathFactory, tiny_roberta: Path) -> Path:
    """A directory with roberta-base's architecture (config only) and a small tokenizer: no download needed."""
    from transformers import AutoTokenizer, RobertaConfig

    directory = tmp_path_factory.mktemp("roberta_base_config")
    RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_roberta).save_pretrained(directory)
    return directory


def _reference() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"reference manifest not found at {REFERENCE}")
    return json.loads(REFERENCE.read_text())


def test_state_dict_matches_official_manifest(roberta_base_shaped: Path) -> None:
    ref = _reference()
    model, _, _ = build_model(parse_args(R50_FLAGS + ["--text_encoder_type", str(roberta_base_shaped)]))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: shape for k, shape, _ in ref["state_dict"]}
    assert len(ours) == ref["num_state_dict_entries"] == 804
    assert sorted(set(theirs) - set(ours)) == []
    assert sorted(set(ours) - set(theirs)) == []
    assert {k: s for k, s in ours.items() if s != theirs[k]} == {}
    assert sum(p.numel() for p in model.parameters()) == ref["total_parameters"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ref["trainable_parameters"]
    top_level = list(dict.fromkeys(k.split(".")[0] for k in ours))
    assert top_level == list(dict.fromkeys(k.split(".")[0] for k, _, _ in ref["state_dict"]))
    assert model.transformer.decoder.bbox_embed is model.bbox_embed


def _official_checkpoint(path: Path, ref: dict, extra: dict[str, list[int]] | None = None) -> Path:
    """An official-format checkpoint: {'model', 'args' (Namespace), 'epoch'}; tensors are stride-0 views (tiny file)."""
    shapes = {k: shape for k, shape, _ in ref["state_dict"]}
    shapes.update(extra or {})
    model = {k: torch.zeros(1).expand(shape) if shape else torch.zeros(()) for k, shape in shapes.items()}
    torch.save({"model": model, "args": argparse.Namespace(**ref["config"]), "epoch": 5}, path)
    return path


def test_check_checkpoint_tool_accepts_official_layout(tmp_path: Path, roberta_base_shaped: Path) -> None:
    ref = _reference()
    ckpt = _official_checkpoint(tmp_path / "r50.pth", ref,
                                {"text_encoder.embeddings.position_ids": [1, 514]})
    cmd = [sys.executable, str(ROOT / "tools" / "check_checkpoint.py"), str(ckpt), "--method", "referformer",
           *R50_FLAGS, "--text_encoder_type", str(roberta_base_shaped)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "missing keys: 0" in result.stdout and "unexpected keys: 0" in result.stdout


def test_check_checkpoint_tool_reports_mismatch(tmp_path: Path, roberta_base_shaped: Path) -> None:
    ref = _reference()
    ref = dict(ref, state_dict=[e for e in ref["state_dict"] if e[0] != "query_embed.weight"])
    ckpt = _official_checkpoint(tmp_path / "bad.pth", ref, {"class_embed.0.weight": [65, 256], "extra.weight": [3]})
    cmd = [sys.executable, str(ROOT / "tools" / "check_checkpoint.py"), str(ckpt), "--method", "referformer",
           *R50_FLAGS, "--text_encoder_type", str(roberta_base_shaped)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert "query_embed.weight" in result.stdout and "extra.weight" in result.stdout
    assert "class_embed.0.weight: checkpoint [65, 256] vs model [1, 256]" in result.stdout


def _tiny_batch() -> tuple:
    torch.manual_seed(0)
    clips = [torch.randn(2, 3, 64, 64), torch.randn(2, 3, 56, 44)]
    targets = [{"size": torch.tensor([64, 64])}, {"size": torch.tensor([56, 44])}]
    return nested_tensor_from_videos_list(clips), ["a red circle", "the blue square on the left"], targets


def test_output_shapes(tiny_flags: list[str]) -> None:
    args = parse_args(tiny_flags)
    model, _, _ = build_model(args)
    samples, captions, targets = _tiny_batch()
    out = model(samples, captions, targets)
    assert out["pred_logits"].shape == (2, 2, 3, 1)
    assert out["pred_boxes"].shape == (2, 2, 3, 4)
    assert out["pred_masks"].shape == (2, 2, 3, 16, 16)
    assert len(out["aux_outputs"]) == args.dec_layers - 1
    assert all(a["pred_masks"].shape == out["pred_masks"].shape for a in out["aux_outputs"])
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    model.eval()
    out = model(samples, captions, targets)
    assert out["reference_points"].shape == (2, 2, 3, 2)


def test_valid_indices_select_one_frame(tiny_flags: list[str]) -> None:
    model, _, _ = build_model(parse_args(tiny_flags))
    samples, captions, targets = _tiny_batch()
    for t in targets:
        t["valid_indices"] = torch.tensor([1])
    out = model(samples, captions, targets)
    assert out["pred_masks"].shape == (2, 1, 3, 16, 16)


def test_clip_index_shares_one_backbone_pass_between_expressions(tiny_flags: list[str]) -> None:
    """Three expressions on two clips (clip_index 0, 0, 1) give exactly what three separate clips give."""
    model, _, _ = build_model(parse_args(tiny_flags))
    model.eval()
    samples, _, targets = _tiny_batch()
    captions = ["a red circle", "the blue square on the left", "a white triangle"]
    shared = [dict(targets[0], clip_index=0), dict(targets[0], clip_index=0), dict(targets[1], clip_index=1)]
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].tensors.shape[0]))
    with torch.no_grad():
        out = model(samples, captions, shared)
        clips = samples.tensors[[0, 0, 1]]
        masks = samples.mask[[0, 0, 1]]
        separate = model(type(samples)(clips, masks), captions, [targets[0], targets[0], targets[1]])
    assert calls[0] == 2 and calls[1] == 3
    assert out["pred_masks"].shape == (3, 2, 3, 16, 16)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(out[key], separate[key], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out["pred_logits"][0], out["pred_logits"][1])


def test_sentence_changes_predictions(tiny_flags: list[str]) -> None:
    model, _, _ = build_model(parse_args(tiny_flags))
    model.eval()
    samples, _, targets = _tiny_batch()
    a = model(samples, ["a red circle", "a red circle"], targets)["pred_masks"]
    b = model(samples, ["the white triangle moving down", "the white triangle moving down"], targets)["pred_masks"]
    assert not torch.allclose(a, b)


def test_dynamic_mask_head_equals_grouped_convolution() -> None:
    """Our einsum form of the dynamic head equals upstream's grouped 1x1 convolutions over [features, coords]."""
    from models.segmentation import dynamic_mask_head

    torch.manual_seed(0)
    b, t, q, c, h, w = 2, 2, 3, 6, 5, 4
    weight_nums, bias_nums = [(c + 2) * 8, 64, 8], [8, 8, 1]
    feats = torch.randn(b, t, c, h, w)
    coords = torch.randn(b, t, q, 2, h, w)
    params = torch.randn(b, t, q, sum(weight_nums) + sum(bias_nums))
    ours = dynamic_mask_head(feats, params, coords, weight_nums, bias_nums)

    n = b * t * q
    x = torch.cat([feats[:, :, None].expand(-1, -1, q, -1, -1, -1), coords], dim=3).reshape(1, n * (c + 2), h, w)
    flat = params.reshape(n, -1)
    splits = flat.split(weight_nums + bias_nums, dim=1)
    ws, bs = splits[:3], splits[3:]
    ins = [c + 2, 8, 8]
    for i in range(3):
        weight = ws[i].reshape(n * bias_nums[i], ins[i], 1, 1)
        x = torch.nn.functional.conv2d(x, weight, bs[i].reshape(-1), groups=n)
        if i < 2:
            x = torch.relu(x)
    assert torch.allclose(ours, x.reshape(b, t, q, h, w), atol=1e-5)


def test_relative_coordinates_are_pixel_offsets() -> None:
    from models.segmentation import relative_coordinates

    ref = torch.tensor([[[[0.5, 0.25]]]])
    coords = relative_coordinates(ref, torch.tensor([[40, 80]]), h=10, w=20, stride=4)
    assert coords.shape == (1, 1, 1, 2, 10, 20)
    assert coords[0, 0, 0, 0, 0, 0] == pytest.approx(0.5 * 80 - 2)
    assert coords[0, 0, 0, 1, 3, 5] == pytest.approx(0.25 * 40 - (4 * 3 + 2))


def test_long_caption_is_truncated_to_the_encoder_positions(tiny_flags: list[str]) -> None:
    """A tokenizer saved without model_max_length reports a huge sentinel; the encoder's positions still bound it."""
    model, _, _ = build_model(parse_args(tiny_flags))
    model.tokenizer.model_max_length = int(1e30)
    text = model.encode_text(["the red circle " * 200], torch.device("cpu"))
    assert text.words.tensors.shape[1] == model.text_encoder.config.max_position_embeddings - 2


def test_head_dropout_sets_the_resizer_and_fpn_dropout(tiny_flags: list[str]) -> None:
    """Upstream fixes these at 0.1 (our default); --head_dropout 0 removes them for short runs."""
    def rates(model: torch.nn.Module) -> set[float]:
        heads = [model.resizer, model.pixel_decoder]
        return {m.p for h in heads for m in h.modules() if isinstance(m, torch.nn.Dropout)}

    default, _, _ = build_model(parse_args(tiny_flags))
    off, _, _ = build_model(parse_args(tiny_flags + ["--head_dropout", "0"]))
    assert rates(default) == {0.1}
    assert rates(off) == {0.0}
