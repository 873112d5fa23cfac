"""Deformable-DETR encoder/decoder, with decoder queries whose content part is the sentence feature."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.ops.modules import MSDeformAttn
from util.misc import inverse_sigmoid


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def _activation(name: str):
    if name not in ("relu", "gelu", "glu"):
        raise ValueError(f"activation must be relu/gelu/glu, not {name!r}")
    return getattr(F, name)


class DeformableTransformerEncoderLayer(nn.Module):
    """Post-norm layer: multi-scale deformable self-attention then FFN."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, activation: str = "relu",
                 n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = _activation(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class DeformableTransformerEncoder(nn.Module):
    """Stack of encoder layers. ``after_layer`` is the hook methods override to act on the memory after every
    layer (e.g. an exchange between two streams batched along the batch axis)."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)

    def after_layer(self, lid: int, output: Tensor, padding_mask: Optional[Tensor], num_frames: int) -> Tensor:
        """output [(b t), S, C] after layer ``lid``; frames of one clip are consecutive. Identity here."""
        return output

    @staticmethod
    def get_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor, device: torch.device) -> Tensor:
        """Pixel centres of every level, normalised by the valid area, broadcast to every level: [N, S, L, 2]."""
        points = []
        for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
            ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                                          torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                                          indexing="ij")
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            points.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(points, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(self, src: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                pos: Tensor, padding_mask: Optional[Tensor] = None, num_frames: int = 1) -> Tensor:
        reference_points = self.get_reference_points(spatial_shapes, valid_ratios, src.device).to(src.dtype)
        output = src
        for lid, layer in enumerate(self.layers):
            output = layer(output, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
            output = self.after_layer(lid, output, padding_mask, num_frames)
        return output


class DeformableTransformerDecoderLayer(nn.Module):
    """Post-norm layer: query self-attention, deformable cross-attention to the frame's memory, FFN."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, activation: str = "relu",
                 n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = _activation(activation)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, src: Tensor,
                src_spatial_shapes: Tensor, level_start_index: Tensor,
                src_padding_mask: Optional[Tensor] = None) -> Tensor:
        q = k = (tgt + query_pos).transpose(0, 1)
        attn = self.self_attn(q, k, tgt.transpose(0, 1))[0].transpose(0, 1)
        tgt = self.norm2(tgt + self.dropout2(attn))
        attn = self.cross_attn(tgt + query_pos, reference_points, src, src_spatial_shapes, level_start_index,
                               src_padding_mask)
        tgt = self.norm1(tgt + self.dropout1(attn))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


class DeformableTransformerDecoder(nn.Module):
    """Stack of decoder layers with optional iterative box refinement (bbox_embed set by the model).

    ``after_layer`` is the hook methods override to act on the queries after every layer (e.g. BIFIT's
    inter-frame interaction), before the box refinement of that layer and before the layer's output is
    collected, so the heads see what it returns. Methods install their subclass through
    ``build_deformable_transformer(args, decoder_cls=...)``.
    """

    def __init__(self, decoder_layer: nn.Module, num_layers: int, return_intermediate: bool = False):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.return_intermediate = return_intermediate
        self.bbox_embed: Optional[nn.ModuleList] = None

    def after_layer(self, lid: int, output: Tensor, num_frames: int) -> Tensor:
        """output [(b t), Q, C] after layer ``lid``; the t frames of a clip are consecutive. Identity here."""
        return output

    def forward(self, tgt: Tensor, reference_points: Tensor, src: Tensor, src_spatial_shapes: Tensor,
                src_level_start_index: Tensor, src_valid_ratios: Tensor, query_pos: Tensor,
                src_padding_mask: Optional[Tensor] = None, num_frames: int = 1) -> tuple[Tensor, Tensor]:
        output = tgt
        intermediate, intermediate_refs = [], []
        for lid, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ref_input = reference_points[:, :, None] * torch.cat([src_valid_ratios, src_valid_ratios], -1)[:, None]
            else:
                ref_input = reference_points[:, :, None] * src_valid_ratios[:, None]
            output = layer(output, query_pos, ref_input, src, src_spatial_shapes, src_level_start_index,
                           src_padding_mask)
            output = self.after_layer(lid, output, num_frames)
            if self.bbox_embed is not None:
                delta = self.bbox_embed[lid](output)
                if reference_points.shape[-1] == 4:
                    new_reference_points = (delta + inverse_sigmoid(reference_points)).sigmoid()
                else:
                    new_reference_points = torch.cat(
                        [delta[..., :2] + inverse_sigmoid(reference_points), delta[..., 2:]], -1).sigmoid()
                reference_points = new_reference_points.detach()
            if self.return_intermediate:
                intermediate.append(output)
                intermediate_refs.append(reference_points)
        if self.return_intermediate:
            return torch.stack(intermediate), torch.stack(intermediate_refs)
        return output[None], reference_points[None]


@dataclass
class EncodedMemory:
    """The encoder's output and the flattened layout the decoder needs: memory [bt, S, C], padding mask
    [bt, S], spatial shapes [L, 2], level start indices [L], valid ratios [bt, L, 2]; ``level_shapes`` holds
    the (h, w) of every level as Python ints (slicing by them needs no device sync)."""

    memory: Tensor
    padding_mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    level_shapes: list[tuple[int, int]]

    def level_maps(self, num_levels: int = 3) -> list[Tensor]:
        """The memory of the first ``num_levels`` levels as maps [bt, C, h, w] (the pixel decoder's input)."""
        maps, start = [], 0
        for h, w in self.level_shapes[:num_levels]:
            part = self.memory[:, start:start + h * w]
            maps.append(part.transpose(1, 2).reshape(self.memory.shape[0], -1, h, w))
            start += h * w
        return maps


@dataclass
class TransformerOutput:
    """hs [L_dec, bt, Q, C]; references after each layer [L_dec, bt, Q, 2|4]; initial reference [bt, Q, 2];
    memory [bt, S, C]; memory_features = encoder memory of the first 3 levels as maps [bt, C, h, w]."""

    hs: Tensor
    init_reference: Tensor
    inter_references: Tensor
    memory: Tensor
    memory_features: list[Tensor]
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor


class DeformableTransformer(nn.Module):
    """Deformable encoder over the fused levels, then the query decoder.

    ``forward`` = ``encode`` then ``decode``; methods that put work between the two (a pixel decoder before
    the object decoder, a second stream through the encoder) call the stages themselves. ``decoder_cls``
    (a DeformableTransformerDecoder subclass) and its extra ``decoder_kwargs`` let a method change the
    decoder while the whole transformer keeps upstream's initialisation.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.1,
                 activation: str = "relu", return_intermediate_dec: bool = True, num_feature_levels: int = 4,
                 dec_n_points: int = 4, enc_n_points: int = 4,
                 decoder_cls: type[DeformableTransformerDecoder] = DeformableTransformerDecoder,
                 decoder_kwargs: Optional[dict[str, Any]] = None):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.num_feature_levels = num_feature_levels
        enc_layer = DeformableTransformerEncoderLayer(d_model, dim_feedforward, dropout, activation,
                                                      num_feature_levels, nhead, enc_n_points)
        self.encoder = DeformableTransformerEncoder(enc_layer, num_encoder_layers)
        dec_layer = DeformableTransformerDecoderLayer(d_model, dim_feedforward, dropout, activation,
                                                      num_feature_levels, nhead, dec_n_points)
        self.decoder = decoder_cls(dec_layer, num_decoder_layers, return_intermediate_dec, **(decoder_kwargs or {}))
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.constant_(self.reference_points.bias, 0.0)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask: Tensor) -> Tensor:
        """(valid_W / W, valid_H / H) of each map from its padding mask."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1)
        valid_w = (~mask[:, 0, :]).sum(1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    def encode(self, srcs: list[Tensor], masks: list[Tensor], pos_embeds: list[Tensor],
               num_frames: int = 1) -> EncodedMemory:
        """srcs/masks/pos_embeds per level [bt, C, h, w]; the t frames of a clip are consecutive in bt."""
        src_flatten, mask_flatten, lvl_pos_flatten, shapes = [], [], [], []
        for lvl, (src, mask, pos) in enumerate(zip(srcs, masks, pos_embeds)):
            shapes.append(src.shape[-2:])
            src_flatten.append(src.flatten(2).transpose(1, 2))
            mask_flatten.append(mask.flatten(1))
            lvl_pos_flatten.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src_flatten = torch.cat(src_flatten, 1)
        mask_flatten = torch.cat(mask_flatten, 1)
        lvl_pos_flatten = torch.cat(lvl_pos_flatten, 1)
        spatial_shapes = torch.as_tensor([tuple(s) for s in shapes], dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)
        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, valid_ratios, lvl_pos_flatten,
                              mask_flatten, num_frames)
        return EncodedMemory(memory, mask_flatten, spatial_shapes, level_start_index, valid_ratios,
                             [(int(h), int(w)) for h, w in shapes])

    def decode(self, encoded: EncodedMemory, tgt: Tensor, query_embed: Tensor,
               num_frames: int = 1) -> TransformerOutput:
        """tgt and query_embed [bt, Q, C]: every frame's queries read that frame's memory."""
        reference_points = self.reference_points(query_embed).sigmoid()
        hs, inter_references = self.decoder(tgt, reference_points, encoded.memory, encoded.spatial_shapes,
                                            encoded.level_start_index, encoded.valid_ratios, query_embed,
                                            encoded.padding_mask, num_frames)
        return TransformerOutput(hs, reference_points, inter_references, encoded.memory, encoded.level_maps(),
                                 encoded.spatial_shapes, encoded.level_start_index, encoded.valid_ratios)

    def forward(self, srcs: list[Tensor], tgt: Tensor, masks: list[Tensor], pos_embeds: list[Tensor],
                query_embed: Tensor, num_frames: int = 1) -> TransformerOutput:
        """srcs/masks/pos_embeds per level [bt, C, h, w]; tgt and query_embed [bt, Q, C]; bt = clips x
        ``num_frames`` with each clip's frames consecutive (1: every element is its own clip)."""
        return self.decode(self.encode(srcs, masks, pos_embeds, num_frames), tgt, query_embed, num_frames)


def build_deformable_transformer(args: Any, decoder_cls: type[DeformableTransformerDecoder] = DeformableTransformerDecoder,
                                 **decoder_kwargs: Any) -> DeformableTransformer:
    """The transformer for the model flags; a method passes its decoder subclass and that class's extra
    constructor arguments."""
    return DeformableTransformer(
        d_model=args.hidden_dim, nhead=args.nheads, num_encoder_layers=args.enc_layers,
        num_decoder_layers=args.dec_layers, dim_feedforward=args.dim_feedforward, dropout=args.dropout,
        activation="relu", return_intermediate_dec=True, num_feature_levels=args.num_feature_levels,
        dec_n_points=args.dec_n_points, enc_n_points=args.enc_n_points, decoder_cls=decoder_cls,
        decoder_kwargs=decoder_kwargs)
