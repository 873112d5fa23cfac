"""Visual backbones returning 4 feature levels (strides 4, 8, 16, 32) with masks and position encodings:
torchvision ResNets and the Swin / Video-Swin bodies of models/swin_transformer.py."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter

from util.misc import NestedTensor

from .position_encoding import build_position_encoding
from .swin_transformer import SWIN_CONFIGS, SwinTransformer, is_swin, load_swin_pretrained

logger = logging.getLogger(__name__)

RESNET_CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "resnet101": [256, 512, 1024, 2048],
}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms, all stored as buffers (as upstream checkpoints)."""

    def __init__(self, n: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class Backbone(nn.Module):
    """torchvision ResNet body; stem and layer1 stay frozen as in DETR, everything if not trainable."""

    def __init__(self, name: str, train_backbone: bool, dilation: bool = False, norm: str = "frozen_bn",
                 pretrained: str = "none"):
        super().__init__()
        if name not in RESNET_CHANNELS:
            raise ValueError(f"--backbone {name!r} is not supported; choose one of "
                             f"{sorted(RESNET_CHANNELS) + sorted(SWIN_CONFIGS)}")
        norm_layer = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d}[norm]
        kwargs: dict[str, Any] = {"norm_layer": norm_layer}
        if name in ("resnet50", "resnet101"):
            kwargs["replace_stride_with_dilation"] = [False, False, dilation]
        weights = "DEFAULT" if pretrained == "imagenet" else None
        body = getattr(torchvision.models, name)(weights=weights, **kwargs)
        if pretrained not in ("imagenet", "none"):
            load_torchvision_weights(body, Path(pretrained))
        for pname, parameter in body.named_parameters():
            if not train_backbone or not any(layer in pname for layer in ("layer2", "layer3", "layer4")):
                parameter.requires_grad_(False)
        layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
        self.body = IntermediateLayerGetter(body, return_layers=layers)
        self.strides = [4, 8, 16, 32 if not dilation else 16]
        self.num_channels = RESNET_CHANNELS[name]

    def forward(self, tensor_list: NestedTensor, num_frames: int = 1) -> dict[str, NestedTensor]:
        """Frames are independent for a CNN; ``num_frames`` is accepted for the interface Video-Swin needs."""
        return with_masks(self.body(tensor_list.tensors), tensor_list.mask)


class SwinBackbone(nn.Module):
    """Swin or Video-Swin body (models/swin_transformer.py); every parameter trains unless lr_backbone <= 0."""

    def __init__(self, name: str, train_backbone: bool, use_checkpoint: bool = False, pretrained: str = "none"):
        super().__init__()
        self.body = SwinTransformer(SWIN_CONFIGS[name], use_checkpoint)
        if pretrained != "none":
            load_swin_pretrained(self.body, Path(pretrained))
        if not train_backbone:
            self.body.requires_grad_(False)
        self.strides = [4, 8, 16, 32]
        self.num_channels = self.body.num_channels

    def forward(self, tensor_list: NestedTensor, num_frames: int = 1) -> dict[str, NestedTensor]:
        """``num_frames``: clip length of the [B*T] frames, for Video-Swin's attention across time."""
        return with_masks(self.body(tensor_list.tensors, num_frames), tensor_list.mask)


def with_masks(features: dict[str, Tensor], mask: Tensor) -> dict[str, NestedTensor]:
    """Each level with the image padding mask resized (nearest) to its size."""
    return {key: NestedTensor(feat, F.interpolate(mask[None].float(), size=feat.shape[-2:]).to(torch.bool)[0])
            for key, feat in features.items()}


def load_torchvision_weights(body: nn.Module, path: Path) -> None:
    """Load an ImageNet ResNet state dict saved by torchvision (the fc head is ignored)."""
    if not path.is_file():
        raise FileNotFoundError(f"--backbone_pretrained: no such file {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state.get("state_dict", state))
    result = body.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: backbone weights lack {len(missing)} entries, e.g. {missing[:3]}")
    logger.info("loaded backbone weights from %s", path)


class Joiner(nn.Sequential):
    """Backbone ("0") + position encoding ("1"); clips [B, T, 3, H, W] are processed as B*T frames."""

    def __init__(self, backbone: Backbone | SwinBackbone, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.strides = backbone.strides
        self.num_channels = backbone.num_channels

    def forward(self, samples: NestedTensor) -> tuple[list[NestedTensor], list[Tensor]]:
        tensors, mask = samples.tensors, samples.mask
        num_frames = 1
        if tensors.dim() == 5:
            num_frames = tensors.shape[1]
            tensors, mask = tensors.flatten(0, 1), mask.flatten(0, 1)
        features = self[0](NestedTensor(tensors, mask), num_frames)
        out = [features[k] for k in sorted(features)]
        pos = [self[1](f.mask).to(f.tensors.dtype) for f in out]
        return out, pos


def build_backbone(args: Any) -> Joiner:
    """ResNet (torchvision; ImageNet weights by default when training from scratch) or (Video-)Swin (random
    init unless --backbone_pretrained names the official ImageNet / Kinetics checkpoint)."""
    position_embedding = build_position_encoding(args.hidden_dim, args.position_embedding)
    if is_swin(args.backbone):
        pretrained = args.backbone_pretrained or "none"
        if pretrained == "imagenet":
            raise ValueError(f"--backbone {args.backbone}: no download for Swin weights; pass --backbone_pretrained "
                             "PATH to the official Swin (ImageNet) or Video-Swin (Kinetics) checkpoint")
        return Joiner(SwinBackbone(args.backbone, args.lr_backbone > 0, args.use_checkpoint, pretrained),
                      position_embedding)
    pretrained = args.backbone_pretrained or "imagenet"
    if getattr(args, "resume", "") or getattr(args, "pretrained_weights", None):
        pretrained = "none" if pretrained == "imagenet" else pretrained
    backbone = Backbone(args.backbone, args.lr_backbone > 0, args.dilation, args.backbone_norm, pretrained)
    return Joiner(backbone, position_embedding)
