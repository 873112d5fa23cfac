"""Sine position encodings: 2D for visual feature maps, 1D for word sequences (no parameters)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


def _interleave_sin_cos(pos: Tensor) -> Tensor:
    """[..., D] angles -> [..., D] with sin on even and cos on odd channels, interleaved as DETR does."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class _SineEncoding(nn.Module):
    """Shared hyper-parameters and frequency table of the sine encodings."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, normalize: bool = True,
                 scale: Optional[float] = None):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def frequencies(self, device: torch.device) -> Tensor:
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        return self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)


class PositionEmbeddingSine2D(_SineEncoding):
    """DETR sine encoding over the unpadded area of each map (offset -0.5 as in Deformable-DETR)."""

    def __init__(self, num_pos_feats: int = 128, **kwargs):
        super().__init__(num_pos_feats, **kwargs)

    def forward(self, mask: Tensor) -> Tensor:
        """mask [N, h, w] (True = padding) -> [N, 2*num_pos_feats, h, w]."""
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = self.frequencies(mask.device)
        pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingSine1D(_SineEncoding):
    """Sine encoding of token positions (no -0.5 offset, as upstream) for the text sequence."""

    def __init__(self, num_pos_feats: int = 256, **kwargs):
        super().__init__(num_pos_feats, **kwargs)

    def forward(self, mask: Tensor) -> Tensor:
        """mask [B, L] (True = padding) -> [B, num_pos_feats, L]."""
        x_embed = (~mask).to(torch.float32).cumsum(1)
        if self.normalize:
            x_embed = x_embed / (x_embed[:, -1:] + 1e-6) * self.scale
        return _interleave_sin_cos(x_embed[..., None] / self.frequencies(mask.device)).permute(0, 2, 1)


def build_position_encoding(hidden_dim: int, kind: str = "sine") -> PositionEmbeddingSine2D:
    if kind not in ("sine", "v2"):
        raise ValueError(f"--position_embedding {kind!r} is not supported; use 'sine'")
    return PositionEmbeddingSine2D(hidden_dim // 2, normalize=True)
