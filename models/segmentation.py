"""Mask branch: vision-language fusion, the cross-modal FPN pixel decoder and the dynamic mask head."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .position_encoding import PositionEmbeddingSine1D


class VisionLanguageFusionModule(nn.Module):
    """Early fusion: visual tokens multiplied by their cross-attention read-out of the words (no residual)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Optional[Tensor] = None,
                pos: Optional[Tensor] = None, query_pos: Optional[Tensor] = None) -> Tensor:
        """tgt [S, B, C] visual tokens; memory [L, B, C] words; pos = text position encoding."""
        key = memory if pos is None else memory + pos
        query = tgt if query_pos is None else tgt + query_pos
        attn = self.multihead_attn(query, key, memory, key_padding_mask=memory_key_padding_mask)[0]
        return tgt * attn


def _downsample_tokens(x: Tensor, t: int, h: int, w: int, size: tuple[int, int], mode: str) -> Tensor:
    """[(t h w), B, C] tokens -> resized per frame to ``size`` -> [(t h' w'), B, C]."""
    b, c = x.shape[1], x.shape[2]
    maps = x.reshape(t, h, w, b, c).permute(3, 0, 4, 1, 2).reshape(b * t, c, h, w)
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    maps = F.interpolate(maps, size=size, mode=mode, **kwargs)
    return maps.reshape(b, t, c, size[0], size[1]).permute(1, 3, 4, 0, 2).reshape(-1, b, c)


class VisionLanguageBlock(nn.Module):
    """Post-norm block: spatio-temporal self-attention with spatial reduction, cross-attention to words, FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, t: int, h: int, w: int, tgt_key_padding_mask: Tensor,
                memory_key_padding_mask: Tensor, pos: Tensor, query_pos: Tensor, sr_ratio: int) -> Tensor:
        """tgt/pos [(t h w), B, C]; tgt_key_padding_mask [B, t*h*w]; memory/query_pos [L, B, C]."""
        q = k = tgt + pos
        v = tgt
        key_mask = tgt_key_padding_mask
        if sr_ratio > 1:
            size = (max(h // sr_ratio, 1), max(w // sr_ratio, 1))
            q, k, v = (_downsample_tokens(x, t, h, w, size, "nearest") for x in (q, k, v))
            b = key_mask.shape[0]
            mask_maps = key_mask.reshape(b * t, 1, h, w).float()
            key_mask = F.interpolate(mask_maps, size=size).bool().reshape(b, -1)
            attn = self.self_attn(q, k, v, key_padding_mask=key_mask)[0]
            attn = _downsample_tokens(attn, t, size[0], size[1], (h, w), "bilinear")
        else:
            attn = self.self_attn(q, k, v, key_padding_mask=key_mask)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.multihead_attn(tgt + pos, memory + query_pos, memory, key_padding_mask=memory_key_padding_mask)[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class Conv2dNorm(nn.Conv2d):
    """Conv2d with a GroupNorm stored as ``.norm`` and an optional ReLU (detectron2-style naming)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, bias: bool = False,
                 norm_groups: Optional[int] = None, relu: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.norm = nn.GroupNorm(norm_groups, out_channels) if norm_groups else None
        self.relu = relu
        nn.init.kaiming_uniform_(self.weight, a=1)
        if self.bias is not None:
            nn.init.constant_(self.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class CrossModalFPNDecoder(nn.Module):
    """FPN over strides 32 -> 4 where every stage first attends across the clip and to the words."""

    SR_RATIOS = (8, 4, 2, 1)

    def __init__(self, feature_channels: list[int], conv_dim: int, mask_dim: int, dim_feedforward: int = 2048,
                 norm_groups: int = 8, nhead: int = 8, dropout: float = 0.1):
        super().__init__()
        self.num_stages = len(feature_channels)
        for s, in_ch in enumerate(feature_channels, start=1):
            setattr(self, f"adapter_{s}", Conv2dNorm(in_ch, conv_dim, 1, norm_groups=norm_groups))
            setattr(self, f"layer_{s}", Conv2dNorm(conv_dim, conv_dim, 3, padding=1, norm_groups=norm_groups,
                                                   relu=True))
        self.mask_features = Conv2dNorm(conv_dim, mask_dim, 3, padding=1, bias=True)
        for s in range(1, self.num_stages + 1):
            block = VisionLanguageBlock(conv_dim, nhead, dim_feedforward, dropout=dropout)
            for p in block.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            setattr(self, f"cross_attn_{s}", block)
        self.text_pos = PositionEmbeddingSine1D(conv_dim, normalize=True)

    def forward(self, features: list[Tensor], feature_masks: list[Tensor], pos_embeds: list[Tensor],
                words: Tensor, words_mask: Tensor, num_frames: int) -> Tensor:
        """features/masks/pos fine to coarse ([bt, C_s, h, w]); words [B, L, C] -> mask features [bt, D, H/4, W/4]."""
        text_pos = self.text_pos(words_mask).permute(2, 0, 1)
        memory = words.transpose(0, 1)
        y = None
        for s in range(self.num_stages, 0, -1):
            x = getattr(self, f"adapter_{s}")(features[s - 1])
            bt, c, h, w = x.shape
            b = bt // num_frames
            tokens = x.reshape(b, num_frames, c, h, w).permute(1, 3, 4, 0, 2).reshape(-1, b, c)
            pos = pos_embeds[s - 1].reshape(b, num_frames, c, h, w).permute(1, 3, 4, 0, 2).reshape(-1, b, c)
            mask = feature_masks[s - 1].reshape(b, -1)
            tokens = getattr(self, f"cross_attn_{s}")(tokens, memory, num_frames, h, w, mask, words_mask, pos,
                                                      text_pos, self.SR_RATIOS[s - 1])
            cur = tokens.reshape(num_frames, h, w, b, c).permute(3, 0, 4, 1, 2).reshape(bt, c, h, w)
            if y is not None:
                cur = cur + F.interpolate(y, size=(h, w), mode="nearest")
            y = getattr(self, f"layer_{s}")(cur)
        return self.mask_features(y)


def dynamic_mask_head(mask_features: Tensor, params: Tensor, rel_coords: Optional[Tensor], weight_nums: list[int],
                      bias_nums: list[int]) -> Tensor:
    """Per-instance 1x1-conv MLPs whose weights come from the controller (CondInst layout).

    mask_features [B, T, C, h, w]; params [B, T, Q, P] laid out as all weights then all biases;
    rel_coords [B, T, Q, 2, h, w] or None. Returns mask logits [B, T, Q, h, w]. The first layer is split
    into a shared product with the C feature channels and a per-instance coordinate term, which equals the
    grouped convolution over [features, coords] without materialising Q copies of the feature map.
    """
    num_layers = len(weight_nums)
    weights_flat, biases_flat = params.split([sum(weight_nums), sum(bias_nums)], dim=-1)
    weights = weights_flat.split(weight_nums, dim=-1)
    biases = biases_flat.split(bias_nums, dim=-1)
    c = mask_features.shape[2]
    x = None
    for layer in range(num_layers):
        out_ch = bias_nums[layer]
        w = weights[layer].reshape(*params.shape[:3], out_ch, -1)
        if layer == 0:
            x = torch.einsum("btqoc,btchw->btqohw", w[..., :c], mask_features)
            if rel_coords is not None:
                x = x + torch.einsum("btqoc,btqchw->btqohw", w[..., c:], rel_coords)
        else:
            x = torch.einsum("btqoi,btqihw->btqohw", w, x)
        x = x + biases[layer][..., None, None]
        if layer < num_layers - 1:
            x = F.relu(x)
    return x.squeeze(3)


def relative_coordinates(reference_points: Tensor, sizes: Tensor, h: int, w: int, stride: int) -> Tensor:
    """reference [B, T, Q, 2] (normalised to the unpadded image) -> [B, T, Q, 2, h, w] pixel offsets (dx, dy)."""
    device = reference_points.device
    shifts_x = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=device) + stride // 2
    shifts_y = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=device) + stride // 2
    loc_y, loc_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    scale = sizes.flip(-1).to(reference_points.dtype)[:, None, None, :]
    ref = reference_points * scale
    dx = ref[..., 0, None, None] - loc_x
    dy = ref[..., 1, None, None] - loc_y
    return torch.stack([dx, dy], dim=3)
