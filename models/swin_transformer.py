"""Swin (2D, mmdet style) and Video-Swin (3D, per-frame outputs) backbones with the official parameter names.

One windowed-attention implementation serves both: a 2D window is (h, w) and a 3D window (t, h, w). The names
and layouts follow the released ReferFormer checkpoints (spec referformer.md 2.2 and the state-dict notes), so
``backbone.0.body.*`` of an official Swin-T/S/B/L or Video-Swin-T/S/B checkpoint loads without a key map:

- Swin: ``patch_embed.{proj,norm}``, ``layers.I.blocks.J.{norm1, attn.{relative_position_bias_table,
  relative_position_index, qkv, proj}, norm2, mlp.{fc1, fc2}}``, ``layers.I.downsample.{reduction, norm}`` and a
  LayerNorm ``norm{I}`` on every output;
- Video-Swin: the same blocks with a 3D bias table, patch merging in ``downsamples.I`` and no output norms; the
  stage outputs are taken before down-sampling.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as activation_checkpoint
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# The value upstream adds to the logits of token pairs from different regions of a shifted window.
SHIFT_MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    drop_path_rate: float
    window: tuple[int, ...]  # (h, w) for Swin, (t, h, w) for Video-Swin


SWIN_CONFIGS = {
    "swin_t_p4w7": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2, (7, 7)),
    "swin_s_p4w7": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 0.2, (7, 7)),
    "swin_b_p4w7": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 0.3, (7, 7)),
    "swin_l_p4w7": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 0.3, (7, 7)),
    "video_swin_t_p4w7": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2, (8, 7, 7)),
    "video_swin_s_p4w7": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 0.2, (8, 7, 7)),
    "video_swin_b_p4w7": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 0.2, (8, 7, 7)),
}


def is_swin(name: str) -> bool:
    return name in SWIN_CONFIGS


def relative_position_index(window: Sequence[int]) -> Tensor:
    """[N, N] index into the bias table for every token pair of a window (N = prod(window)).

    Coordinate differences are shifted to start at 0 and combined in mixed radix (2*w_i - 1), the last axis
    fastest: the layout of the released bias tables.
    """
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    index = torch.zeros(relative.shape[:2], dtype=torch.long)
    for axis, w in enumerate(window):
        index = index * (2 * w - 1) + relative[..., axis] + (w - 1)
    return index


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """[B, *S, C] with S divisible by window -> [B * num_windows, prod(window), C] (windows in raster order)."""
    b, *sizes, c = x.shape
    dims = len(window)
    split = [v for s, w in zip(sizes, window) for v in (s // w, w)]
    x = x.view(b, *split, c)
    order = [0] + [1 + 2 * i for i in range(dims)] + [2 + 2 * i for i in range(dims)] + [1 + 2 * dims]
    return x.permute(order).reshape(-1, math.prod(window), c)


def window_reverse(windows: Tensor, window: Sequence[int], batch: int, sizes: Sequence[int]) -> Tensor:
    """Inverse of window_partition: [B * num_windows, prod(window), C] -> [B, *sizes, C]."""
    dims = len(window)
    counts = [s // w for s, w in zip(sizes, window)]
    x = windows.view(batch, *counts, *window, -1)
    order = [0] + [v for i in range(dims) for v in (1 + i, 1 + dims + i)] + [1 + 2 * dims]
    return x.permute(order).reshape(batch, *sizes, -1)


def clipped_window(sizes: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> tuple[tuple[int, ...],
                                                                                            tuple[int, ...]]:
    """Video-Swin: an axis no longer than its window uses a window of its own length and no shift."""
    use_window = tuple(s if s <= w else w for s, w in zip(sizes, window))
    use_shift = tuple(0 if s <= w else d for s, w, d in zip(sizes, window, shift))
    return use_window, use_shift


def shifted_window_mask(padded: Sequence[int], window: Sequence[int], shift: Sequence[int],
                        device: torch.device) -> Tensor:
    """[num_windows, N, N] additive mask: after the cyclic shift a window may hold tokens of separate regions."""
    labels = torch.zeros((1, *padded, 1), device=device)
    regions = [(slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
    for label, region in enumerate(itertools.product(*regions)):
        labels[(slice(None), *region, slice(None))] = label
    flat = window_partition(labels, window).squeeze(-1)
    different = flat[:, None, :] != flat[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE)


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample during training, rescaling the survivors."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias per head."""

    def __init__(self, dim: int, window: Sequence[int], num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros(math.prod(2 * w - 1 for w in window), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x [B * nW, N, C]; mask [nW, N, N] or None. A window smaller than the built one uses the first N rows
        and columns of the index, as upstream Video-Swin does for clipped windows."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index[:n, :n].reshape(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(bw // windows, windows, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.num_heads, n, n)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP on [B, *S, C] tokens (S = (h, w) or (t, h, w))."""

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], shifted: bool, drop_path: float):
        super().__init__()
        self.shifted = shifted  # the stage decides the shift (Video-Swin drops it on shrunk axes)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def attend(self, x: Tensor, window: tuple[int, ...], shift: tuple[int, ...], mask: Optional[Tensor]) -> Tensor:
        b, *sizes, c = x.shape
        x = self.norm1(x)
        pad = [(w - s % w) % w for s, w in zip(sizes, window)]
        x = F.pad(x, [0, 0] + [v for p in reversed(pad) for v in (0, p)])
        padded = x.shape[1:-1]
        dims = tuple(range(1, len(window) + 1))
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=[-s for s in shift], dims=dims)
        x = self.attn(window_partition(x, window), mask if shifted else None)
        x = window_reverse(x, window, b, padded)
        if shifted:
            x = torch.roll(x, shifts=list(shift), dims=dims)
        return x[(slice(None), *[slice(0, s) for s in sizes])]

    def forward(self, x: Tensor, window: tuple[int, ...], shift: tuple[int, ...], mask: Optional[Tensor]) -> Tensor:
        x = x + self.drop_path(self.attend(x, window, shift, mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 spatial neighbours -> one token with twice the channels (time is kept), concatenated in the (row,
    column) offset order (0,0), (1,0), (0,1), (1,1) of the released weights."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-3:-1]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        parts = [x[..., row::2, col::2, :] for row, col in ((0, 0), (1, 0), (0, 1), (1, 1))]
        return self.reduction(self.norm(torch.cat(parts, -1)))


class SwinStage(nn.Module):
    """Blocks of one resolution, alternating plain and shifted windows; optional patch merging at the end."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: Sequence[int], drop_paths: Sequence[float],
                 downsample: bool, use_checkpoint: bool):
        super().__init__()
        self.window = tuple(window)
        self.clip_windows = len(self.window) == 3  # Video-Swin shrinks windows to short axes; 2D Swin pads
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([SwinBlock(dim, num_heads, window, shifted=i % 2 == 1, drop_path=drop_paths[i])
                                     for i in range(depth)])
        self.downsample = PatchMerging(dim) if downsample else None

    def run_blocks(self, x: Tensor) -> Tensor:
        """x [B, *S, C] -> the stage's output before down-sampling, same shape."""
        sizes = x.shape[1:-1]
        full_shift = tuple(w // 2 for w in self.window)
        window, shift = (clipped_window(sizes, self.window, full_shift) if self.clip_windows
                         else (self.window, full_shift))
        padded = [math.ceil(s / w) * w for s, w in zip(sizes, window)]
        mask = shifted_window_mask(padded, window, shift, x.device) if any(shift) else None
        for block in self.blocks:
            block_shift = shift if block.shifted else (0,) * len(window)
            if self.use_checkpoint and x.requires_grad:
                x = activation_checkpoint.checkpoint(block, x, window, block_shift, mask, use_reentrant=False)
            else:
                x = block(x, window, block_shift, mask)
        return x


class PatchEmbed(nn.Module):
    """Non-overlapping 4x4 patches (x1 in time for Video-Swin) -> embed_dim, then LayerNorm; pads to whole patches."""

    def __init__(self, embed_dim: int, video: bool):
        super().__init__()
        conv = nn.Conv3d if video else nn.Conv2d
        self.patch = (1, 4, 4) if video else (4, 4)
        self.proj = conv(3, embed_dim, kernel_size=self.patch, stride=self.patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, 3, (T,) H, W] -> tokens [B, (T,) H/4, W/4, C]."""
        pad = [(p - s % p) % p for s, p in zip(x.shape[2:], self.patch)]
        x = F.pad(x, [v for p in reversed(pad) for v in (0, p)])
        x = self.proj(x)
        return self.norm(x.movedim(1, -1))


class SwinTransformer(nn.Module):
    """Swin / Video-Swin body: frames [B*T, 3, H, W] -> {"0".."3": [B*T, C_i, H/2^(i+2), W/2^(i+2)]}."""

    def __init__(self, config: SwinConfig, use_checkpoint: bool = False):
        super().__init__()
        self.video = len(config.window) == 3
        self.patch_embed = PatchEmbed(config.embed_dim, self.video)
        self.pos_drop = nn.Dropout(0.0)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        starts = [sum(config.depths[:i]) for i in range(len(config.depths))]
        last = len(config.depths) - 1
        self.layers = nn.ModuleList([
            SwinStage(config.embed_dim * 2 ** i, depth, heads, config.window, rates[start:start + depth],
                      downsample=not self.video and i < last, use_checkpoint=use_checkpoint)
            for i, (depth, heads, start) in enumerate(zip(config.depths, config.num_heads, starts))])
        self.num_channels = [config.embed_dim * 2 ** i for i in range(len(config.depths))]
        if self.video:
            self.downsamples = nn.ModuleList([PatchMerging(c) for c in self.num_channels[:-1]])
        else:
            for i, channels in enumerate(self.num_channels):
                self.add_module(f"norm{i}", nn.LayerNorm(channels))
            self.apply(_init_swin_2d)

    def forward(self, frames: Tensor, num_frames: int = 1) -> dict[str, Tensor]:
        if self.video:
            n = frames.shape[0]
            if n % num_frames:
                raise ValueError(f"Video-Swin: {n} frames do not split into clips of {num_frames}")
            frames = frames.view(n // num_frames, num_frames, *frames.shape[1:]).transpose(1, 2)
        x = self.pos_drop(self.patch_embed(frames))
        out = {}
        for i, stage in enumerate(self.layers):
            x = stage.run_blocks(x)
            if self.video:
                out[str(i)] = x.flatten(0, 1).permute(0, 3, 1, 2).contiguous()
                if i < len(self.downsamples):
                    x = self.downsamples[i](x)
            else:
                out[str(i)] = getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2).contiguous()
                if stage.downsample is not None:
                    x = stage.downsample(x)
        return out


def _init_swin_2d(module: nn.Module) -> None:
    """Upstream Swin init: truncated-normal linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def load_swin_pretrained(body: SwinTransformer, path: Path) -> None:
    """ImageNet Swin (``['model']``, non-strict: the output norms stay at init) or Kinetics Video-Swin
    (``['state_dict']``, 'backbone.' entries, patch kernel summed over its temporal axis, strict)."""
    if not path.is_file():
        raise FileNotFoundError(f"--backbone_pretrained: no such file {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if body.video:
        if "state_dict" not in ckpt:
            raise ValueError(f"{path}: a Video-Swin checkpoint has a 'state_dict' entry; found {sorted(ckpt)[:5]}")
        state = {k[len("backbone."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
        state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].sum(dim=2, keepdim=True)
        state.pop("norm.weight", None)
        state.pop("norm.bias", None)
        merges = {k: v for k, v in state.items() if ".downsample." in k}
        for key, value in merges.items():
            stage, rest = key[len("layers."):].split(".downsample.")
            state[f"downsamples.{stage}.{rest}"] = state.pop(key)
        body.load_state_dict(state, strict=True)
    else:
        if "model" not in ckpt:
            raise ValueError(f"{path}: a Swin ImageNet checkpoint has a 'model' entry; found {sorted(ckpt)[:5]}")
        result = body.load_state_dict(ckpt["model"], strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("norm")]
        if missing:
            raise ValueError(f"{path}: Swin weights lack {len(missing)} entries, e.g. {missing[:3]}")
    logger.info("loaded backbone weights from %s", path)
