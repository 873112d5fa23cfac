"""Text side: a transformers encoder (RoBERTa by default) plus the shared FeatureResizer."""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from util.misc import NestedTensor

logger = logging.getLogger(__name__)


class FeatureResizer(nn.Module):
    """Linear projection of text features to the visual width, then LayerNorm (eps 1e-12) and dropout."""

    def __init__(self, input_feat_size: int, output_feat_size: int, dropout: float, do_ln: bool = True):
        super().__init__()
        self.do_ln = do_ln
        self.fc = nn.Linear(input_feat_size, output_feat_size, bias=True)
        self.layer_norm = nn.LayerNorm(output_feat_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, encoder_features: Tensor) -> Tensor:
        x = self.fc(encoder_features)
        if self.do_ln:
            x = self.layer_norm(x)
        return self.dropout(x)


@dataclass
class TextFeatures:
    """Encoded captions: word features (NestedTensor [B, L, C], mask True = pad) and sentence feature [B, C]."""

    words: NestedTensor
    sentence: Tensor


def load_text_encoder(name_or_path: str) -> tuple[Any, nn.Module]:
    """Tokenizer and encoder from a hub name (e.g. roberta-base) or a local directory."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        encoder = AutoModel.from_pretrained(name_or_path, add_pooling_layer=True)
    except OSError as err:
        raise OSError(
            f"--text_encoder_type {name_or_path!r}: could not load a tokenizer and model ({err}). Give a "
            "hub name that is reachable or cached, or a local directory written by save_pretrained()."
        ) from err
    return tokenizer, encoder


def text_encoder_from_config(config: Any, tokenizer: Any = None) -> tuple[Any, nn.Module]:
    """An encoder with random weights built from a transformers config (checkpoint loading, tests)."""
    from transformers import AutoModel

    return tokenizer, AutoModel.from_config(config, add_pooling_layer=True)


def encoder_token_limit(tokenizer: Any, encoder: nn.Module) -> int:
    """Longest token sequence the pair can take: the tokenizer's limit, capped by the encoder's positions.

    Tokenizers saved without ``model_max_length`` report a huge sentinel; RoBERTa-style position ids start
    after the padding index, hence the margin of 2.
    """
    limits = [getattr(tokenizer, "model_max_length", None)]
    positions = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    if positions:
        limits.append(positions - 2)
    return min(v for v in limits if v is not None and v < 100_000)


def tokenize(tokenizer: Any, captions: Sequence[str], device: torch.device, max_length: int) -> Any:
    """Pad to the longest caption; truncate captions longer than the encoder can take (they would crash it)."""
    return tokenizer(list(captions), padding="longest", truncation=True, max_length=max_length,
                     return_tensors="pt").to(device)


def sentence_feature(encoder_out: Any, attention_mask: Tensor, pooling: str) -> Tensor:
    """Sentence vector: the encoder's pooler output (ReferFormer) or the mask-weighted mean of words."""
    if pooling == "pooler":
        if getattr(encoder_out, "pooler_output", None) is None:
            raise ValueError("--text_pooling pooler needs an encoder with a pooler; use --text_pooling mean")
        return encoder_out.pooler_output
    if pooling == "mean":
        weights = attention_mask.unsqueeze(-1).to(encoder_out.last_hidden_state.dtype)
        return (encoder_out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    raise ValueError(f"--text_pooling must be 'pooler' or 'mean', got {pooling!r}")


# hidden states [B, L, C], padding mask [B, L] (True = pad), sentence vector [B, C]
EncodedText = tuple[Tensor, Tensor, Tensor]


class FrozenTextCache:
    """Encoder outputs per caption, for a frozen text encoder in eval mode (the output then depends only on the
    caption). A training epoch shows every expression once per clip, so each is encoded once instead.

    Entries keep only the caption's own tokens; ``lookup`` pads them again (right padding, as the tokenizers
    do), so the result equals encoding the batch at once up to float rounding. Least recently used entries are
    dropped beyond ``max_entries``.
    """

    def __init__(self, max_entries: int = 16384):
        if max_entries < 1:
            raise ValueError(f"FrozenTextCache: max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def lookup(self, captions: Sequence[str], encode: Callable[[list[str]], EncodedText],
               device: torch.device) -> EncodedText:
        """Encoded captions, running ``encode`` on the ones not cached yet (each distinct caption once)."""
        missing = list(dict.fromkeys(c for c in captions if c not in self._entries))
        found = {c: self._entries[c] for c in captions if c in self._entries}
        if missing:
            with torch.no_grad():
                hidden, pad_mask, sentence = encode(missing)
            for i, caption in enumerate(missing):
                found[caption] = (hidden[i][~pad_mask[i]].detach(), sentence[i].detach())
        for caption, entry in found.items():
            self._entries[caption] = entry
            self._entries.move_to_end(caption)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        words = [found[c][0].to(device) for c in captions]
        length = max(w.shape[0] for w in words)
        hidden = words[0].new_zeros(len(words), length, words[0].shape[-1])
        pad_mask = torch.ones(len(words), length, dtype=torch.bool, device=device)
        for i, w in enumerate(words):
            hidden[i, :w.shape[0]] = w
            pad_mask[i, :w.shape[0]] = False
        return hidden, pad_mask, torch.stack([found[c][1].to(device) for c in captions])
