"""--frozen_text_eval: a frozen text encoder stays in eval mode and its outputs are cached per caption."""
from __future__ import annotations

import pytest
import torch

from models import build_model
from models.text_encoder import FrozenTextCache
from opts import parse_args

CAPTIONS = ["a red circle", "the blue square on the left", "a red circle", "the small green triangle moving up"]


def _model(tiny_flags: list[str], *extra: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model, _, _ = build_model(parse_args(tiny_flags + list(extra)))
    return model


def test_frozen_text_eval_keeps_the_encoder_in_eval_mode(tiny_flags: list[str]) -> None:
    upstream = _model(tiny_flags, "--freeze_text_encoder").train()
    ours = _model(tiny_flags, "--freeze_text_encoder", "--frozen_text_eval").train()
    assert upstream.text_encoder.training
    assert not ours.text_encoder.training and ours.resizer.training and ours.backbone.training
    unfrozen = _model(tiny_flags, "--frozen_text_eval").train()
    assert unfrozen.text_encoder.training  # the flag only applies to a frozen encoder


def test_cached_features_equal_encoding_the_batch(tiny_flags: list[str]) -> None:
    model = _model(tiny_flags, "--freeze_text_encoder", "--frozen_text_eval", "--head_dropout", "0")
    model.eval()
    direct = model.encode_text(CAPTIONS, torch.device("cpu"))
    model.train()
    calls: list[list[str]] = []
    run = model.run_text_encoder
    model.run_text_encoder = lambda captions, device: calls.append(list(captions)) or run(captions, device)
    first = model.encode_text(CAPTIONS, torch.device("cpu"))
    again = model.encode_text(list(reversed(CAPTIONS)), torch.device("cpu"))
    assert calls == [["a red circle", "the blue square on the left", "the small green triangle moving up"]]
    assert len(model.text_cache) == 3
    assert torch.equal(first.words.mask, direct.words.mask)
    words = ~direct.words.mask  # padded positions are masked everywhere; their values depend on the batch
    torch.testing.assert_close(first.words.tensors[words], direct.words.tensors[words], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first.sentence, direct.sentence, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again.sentence, first.sentence.flip(0))
    assert torch.equal(again.words.mask, first.words.mask.flip(0))
    model.train()
    assert len(model.text_cache) == 0  # emptied on entering train mode: weights may have been loaded


def test_cache_needs_gradients_nowhere_and_still_trains_the_resizer(tiny_flags: list[str]) -> None:
    model = _model(tiny_flags, "--freeze_text_encoder", "--frozen_text_eval").train()
    features = model.encode_text(CAPTIONS, torch.device("cpu"))
    (features.words.tensors.sum() + features.sentence.sum()).backward()
    assert model.resizer.fc.weight.grad is not None
    assert all(p.grad is None for p in model.text_encoder.parameters())


def test_cache_drops_least_recently_used_entries() -> None:
    cache = FrozenTextCache(max_entries=2)

    def encode(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = [len(c) for c in captions]
        hidden = torch.stack([torch.full((max(lengths), 3), float(n)) for n in lengths])
        mask = torch.arange(max(lengths))[None] >= torch.tensor(lengths)[:, None]
        return hidden, mask, torch.tensor(lengths, dtype=torch.float32)[:, None].expand(-1, 3)

    hidden, mask, sentence = cache.lookup(["ab", "abcd"], encode, torch.device("cpu"))
    assert hidden.shape == (2, 4, 3) and mask.tolist() == [[False, False, True, True], [False] * 4]
    assert sentence[:, 0].tolist() == [2.0, 4.0]
    cache.lookup(["ab"], encode, torch.device("cpu"))
    cache.lookup(["xyz"], encode, torch.device("cpu"))
    assert set(cache._entries) == {"ab", "xyz"}
    with pytest.raises(ValueError, match="max_entries"):
        FrozenTextCache(max_entries=0)
