"""BIFIT (Lan et al., "Bidirectional Correlation-Driven Inter-Frame Interaction Transformer for Referring
Video Object Segmentation", arXiv 2307.00536): ReferFormer plus two modules.

* Inter-frame interaction: one post-norm Transformer encoder layer (``--query_enc_layers`` shared copies),
  applied after every deformable decoder layer, before box refinement, to all T x Q queries of a clip at
  once, so a query sees the other frames' queries. Its output is what the heads read.
* Bidirectional vision-language interaction: besides ReferFormer's vision-from-language fusion (which keeps
  reading the encoded words), the words read every not-yet-fused visual level in turn through a second
  multiplicative fusion module, cascaded over the levels; the sentence query is tanh(Linear(first word of
  the result)) instead of the text encoder's pooler output.

Losses, matcher, heads and the pixel decoder are ReferFormer's. Official checkpoints name the decoder
layers ``decoder_layers``; ``official_key_map`` maps them onto ours (``layers``), so ReferFormer
checkpoints load into BIFIT without a remap and BIFIT checkpoints load with it.
"""
from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from torch import Tensor, nn

from models.deformable_transformer import (DeformableTransformer, DeformableTransformerDecoder,
                                           build_deformable_transformer)
from models.referformer import ReferFormer, clip_tokens
from models.registry import register_method
from models.segmentation import VisionLanguageFusionModule
from models.text_encoder import TextFeatures
from util.misc import NestedTensor


class InterFrameLayer(nn.Module):
    """Post-norm Transformer encoder layer over a clip's queries: self-attention then ReLU FFN, no position
    embedding and no mask (upstream's ``TransformerEncoderLayer``, parameter names kept)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x [S, B, C] (sequence first)."""
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x)[0]))
        ffn = self.linear2(self.dropout(torch.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(ffn))


class InterFrameDecoder(DeformableTransformerDecoder):
    """Deformable decoder whose queries of all frames of a clip interact after every layer.

    ``query_encoder_layers`` are shared by all decoder layers (not one set per layer), as upstream.
    """

    def __init__(self, decoder_layer: nn.Module, num_layers: int, return_intermediate: bool = False,
                 query_layer: nn.Module | None = None, num_query_layers: int = 1):
        super().__init__(decoder_layer, num_layers, return_intermediate)
        if num_query_layers and query_layer is None:
            raise ValueError("InterFrameDecoder: num_query_layers > 0 needs a query_layer to copy")
        self.query_encoder_layers = nn.ModuleList(copy.deepcopy(query_layer) for _ in range(num_query_layers))

    def after_layer(self, lid: int, output: Tensor, num_frames: int) -> Tensor:
        """[(b t), Q, C] -> self-attention over the t*Q queries of each clip (frame-major) -> same shape."""
        if not len(self.query_encoder_layers):
            return output
        bt, q, c = output.shape
        if bt % num_frames:
            raise ValueError(f"decoder batch {bt} is not a whole number of {num_frames}-frame clips")
        x = output.reshape(bt // num_frames, num_frames * q, c).transpose(0, 1)
        for layer in self.query_encoder_layers:
            x = layer(x)
        return x.transpose(0, 1).reshape(bt, q, c)


class SentencePooler(nn.Module):
    """tanh(Linear(first token)): the sentence feature from the vision-updated words (upstream
    ``RobertaPoolout``; the first token is RoBERTa's <s>)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, words: Tensor) -> Tensor:
        """words [B, L, C] -> [B, C]."""
        return torch.tanh(self.dense(words[:, 0]))


@register_method("bifit")
class BIFIT(ReferFormer):
    """ReferFormer with inter-frame query interaction in the decoder and text that also reads the video."""

    official_key_map = {"transformer.decoder.decoder_layers.": "transformer.decoder.layers."}
    default_overrides: dict[str, Any] = {"lr": 5e-5, "lr_backbone": 1e-5, "num_frames": 6}
    davis_clip_len = 24

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.text_fusion_module = VisionLanguageFusionModule(self.hidden_dim, nhead=8)
        self.poolout_module = SentencePooler(self.hidden_dim)
        pooler = getattr(self.text_encoder, "pooler", None)
        if pooler is not None:
            # BIFIT never reads the encoder's pooler: frozen, DDP needs no find_unused_parameters for it.
            pooler.requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("bifit", "BIFIT (--method bifit); shared flags with BIFIT defaults: "
                                          "--lr 5e-5 --lr_backbone 1e-5 --num_frames 6, DAVIS clips of 24")
        group.add_argument("--query_enc_layers", default=1, type=int,
                           help="inter-frame interaction layers, shared by all decoder layers (0: ReferFormer's "
                                "decoder)")
        group.add_argument("--lr_text_fusion", default=5e-5, type=float,
                           help="lr of the language-from-vision fusion (its own optimiser group)")
        group.add_argument("--lr_text_fusion_names", default=["text_fusion_module"], type=str, nargs="+",
                           help="parameter-name substrings of the --lr_text_fusion group")

    @classmethod
    def build_transformer(cls, args: Any) -> DeformableTransformer:
        query_layer = InterFrameLayer(args.hidden_dim, args.nheads, args.dim_feedforward, args.dropout)
        return build_deformable_transformer(args, decoder_cls=InterFrameDecoder, query_layer=query_layer,
                                            num_query_layers=args.query_enc_layers)

    @classmethod
    def named_lr_groups(cls, args: Any) -> list[tuple[list[str], float]]:
        """Upstream's five groups: default, backbone, text encoder, text fusion, linear projections."""
        groups = super().named_lr_groups(args)
        return groups[:2] + [(args.lr_text_fusion_names, args.lr_text_fusion)] + groups[2:]

    # ------------------------------------------------------------------ stages
    def update_text(self, text: TextFeatures, src: Tensor, mask: Tensor, pos: Tensor,
                    num_frames: int) -> TextFeatures:
        """Words <- words * attention(words -> this level's visual tokens of all clip frames, + their pos)."""
        words = text.words.tensors.transpose(0, 1)
        visual_mask = mask.reshape(src.shape[0] // num_frames, -1)
        fused = self.text_fusion_module(words, clip_tokens(src, num_frames), visual_mask,
                                        clip_tokens(pos, num_frames))
        return TextFeatures(NestedTensor(fused.transpose(0, 1), text.words.mask), text.sentence)

    def build_queries(self, text: TextFeatures, num_frames: int) -> tuple[Tensor, Tensor]:
        """ReferFormer's queries with the sentence pooled from the vision-updated words."""
        pooled = TextFeatures(text.words, self.poolout_module(text.words.tensors))
        return super().build_queries(pooled, num_frames)
