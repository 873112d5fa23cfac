"""Padded batches (NestedTensor), collation and small tensor helpers shared by models and datasets."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor


class NestedTensor:
    """A padded batch plus its padding mask (True = padding), as DETR-style models expect."""

    def __init__(self, tensors: Tensor, mask: Optional[Tensor]):
        self.tensors = tensors
        self.mask = mask

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "NestedTensor":
        mask = self.mask.to(device, non_blocking=non_blocking) if self.mask is not None else None
        return NestedTensor(self.tensors.to(device, non_blocking=non_blocking), mask)

    def decompose(self) -> tuple[Tensor, Optional[Tensor]]:
        return self.tensors, self.mask

    def __repr__(self) -> str:
        return f"NestedTensor(tensors={tuple(self.tensors.shape)}, mask={None if self.mask is None else tuple(self.mask.shape)})"


def _padded_size(sizes: Sequence[Sequence[int]], size_divisibility: int) -> list[int]:
    """Element-wise max of the sizes, with the last two (H, W) rounded up to size_divisibility."""
    out = [max(s[i] for s in sizes) for i in range(len(sizes[0]))]
    if size_divisibility > 1:
        for i in (-2, -1):
            out[i] = (out[i] + size_divisibility - 1) // size_divisibility * size_divisibility
    return out


def nested_tensor_from_tensor_list(tensors: Sequence[Tensor], size_divisibility: int = 1) -> NestedTensor:
    """Pad [C, H, W] images (or [T, H, W] masks) to a common size; mask marks padded pixels."""
    shape = _padded_size([t.shape for t in tensors], size_divisibility)
    batch = tensors[0].new_zeros([len(tensors)] + shape)
    mask = torch.ones((len(tensors), shape[-2], shape[-1]), dtype=torch.bool, device=tensors[0].device)
    for src, dst, m in zip(tensors, batch, mask):
        dst[..., : src.shape[-2], : src.shape[-1]].copy_(src)
        m[: src.shape[-2], : src.shape[-1]] = False
    return NestedTensor(batch, mask)


def nested_tensor_from_videos_list(videos: Sequence[Tensor], size_divisibility: int = 32) -> NestedTensor:
    """Pad clips [T, 3, h, w] to [B, T, 3, Hp, Wp] with a [B, T, Hp, Wp] padding mask (True = pad)."""
    shape = _padded_size([v.shape for v in videos], size_divisibility)
    batch = videos[0].new_zeros([len(videos)] + shape)
    mask = torch.ones((len(videos), shape[0], shape[-2], shape[-1]), dtype=torch.bool, device=videos[0].device)
    for src, dst, m in zip(videos, batch, mask):
        dst[: src.shape[0], :, : src.shape[-2], : src.shape[-1]].copy_(src)
        m[: src.shape[0], : src.shape[-2], : src.shape[-1]] = False
    return NestedTensor(batch, mask)


def collate_fn(batch: Sequence[tuple[Tensor, dict]], size_divisibility: int = 32) -> tuple[NestedTensor, list[dict]]:
    """Collate (clip, target) pairs: clips padded to a multiple of 32, targets kept as a list.

    Targets with ``companions`` (several expressions on one clip) are flattened: each clip's target is
    followed by its companions, and every target of the batch gets ``clip_index``, its clip's position.
    """
    clips, targets = zip(*batch)
    if any("companions" in t for t in targets):
        flat = []
        for index, target in enumerate(targets):
            own = {k: v for k, v in target.items() if k != "companions"}
            flat += [{**t, "clip_index": index} for t in [own, *target.get("companions", ())]]
        targets = flat
    return nested_tensor_from_videos_list(clips, size_divisibility), list(targets)


def targets_to(targets: Sequence[dict[str, Any]], device: torch.device | str) -> list[dict[str, Any]]:
    """Move tensor fields of each target to device; non-tensor fields (captions, ids) are kept as they are."""
    return [{k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit with clamping, as used by deformable box refinement."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))

