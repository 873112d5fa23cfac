"""ReferFormer (Wu et al., CVPR 2022): language as queries for referring video object segmentation.

The base model every method extends. Its forward is split into stages (visual encoding, text encoding,
multi-scale early fusion, query construction, transformer, heads, mask prediction) so that a method
overrides only the stage it changes.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from util.misc import NestedTensor, inverse_sigmoid, nested_tensor_from_videos_list

from .backbone import build_backbone
from .deformable_transformer import DeformableTransformer, TransformerOutput, build_deformable_transformer
from .position_encoding import PositionEmbeddingSine1D
from .registry import register_method
from .segmentation import (CrossModalFPNDecoder, VisionLanguageFusionModule, dynamic_mask_head,
                           relative_coordinates)
from .text_encoder import (EncodedText, encoder_token_limit, FeatureResizer, FrozenTextCache, TextFeatures,
                           load_text_encoder, sentence_feature, text_encoder_from_config, tokenize)

NUM_CLASSES = {"ytvos": 65, "davis": 78, "a2d": 1, "jhmdb": 1}


class MLP(nn.Module):
    """Simple multi-layer perceptron with ReLU between layers (stored as ``layers``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


@register_method("referformer")
class ReferFormer(nn.Module):
    """Sentence-conditioned queries over a Deformable-DETR; one query slot tracks the object across frames."""

    official_key_map: dict[str, str] = {}
    # flag name -> this method's default where it differs from the shared one (applied by
    # models.registry.apply_method_defaults to flags not given on the command line)
    default_overrides: dict[str, Any] = {}
    # Ref-DAVIS17 inference clip length when --clip_len is not given (upstream inference_davis.py)
    davis_clip_len: int = 36

    def __init__(self, backbone: nn.Module, transformer: nn.Module, tokenizer: Any, text_encoder: nn.Module,
                 num_classes: int, num_queries: int, num_feature_levels: int, num_frames: int = 5,
                 mask_dim: int = 256, dim_feedforward: int = 2048, controller_layers: int = 3,
                 dynamic_mask_channels: int = 8, aux_loss: bool = True, with_box_refine: bool = True,
                 freeze_text_encoder: bool = False, rel_coord: bool = True, text_pooling: str = "pooler",
                 head_dropout: float = 0.1, frozen_text_eval: bool = False):
        super().__init__()
        hidden_dim = transformer.d_model
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.num_feature_levels = num_feature_levels
        self.num_frames = num_frames
        self.mask_dim = mask_dim
        self.aux_loss = aux_loss
        self.with_box_refine = with_box_refine
        self.rel_coord = rel_coord
        self.text_pooling = text_pooling
        self.tokenizer = tokenizer

        self.transformer = transformer
        num_pred = transformer.decoder.num_layers
        class_embed = nn.Linear(hidden_dim, num_classes)
        bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.constant_(bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(bbox_embed.layers[-1].bias, 0)
        if with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(num_pred))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(num_pred))
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
            self.transformer.decoder.bbox_embed = self.bbox_embed
        else:
            nn.init.constant_(bbox_embed.layers[-1].bias[2:], -2.0)
            self.class_embed = nn.ModuleList([class_embed] * num_pred)
            self.bbox_embed = nn.ModuleList([bbox_embed] * num_pred)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)

        channels = backbone.num_channels[-3:]
        projections = [nn.Sequential(nn.Conv2d(c, hidden_dim, 1), nn.GroupNorm(32, hidden_dim)) for c in channels]
        for _ in range(num_feature_levels - len(channels)):
            projections.append(nn.Sequential(nn.Conv2d(channels[-1], hidden_dim, 3, stride=2, padding=1),
                                             nn.GroupNorm(32, hidden_dim)))
            channels = [hidden_dim]
        self.input_proj = nn.ModuleList(projections)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.backbone = backbone

        self.text_encoder = text_encoder
        if freeze_text_encoder:
            for p in self.text_encoder.parameters():
                p.requires_grad_(False)
        self.frozen_text_eval = freeze_text_encoder and frozen_text_eval
        self.text_cache = FrozenTextCache()
        self.resizer = FeatureResizer(text_encoder.config.hidden_size, hidden_dim, dropout=head_dropout)
        self.fusion_module = VisionLanguageFusionModule(hidden_dim, nhead=8)
        self.text_pos = PositionEmbeddingSine1D(hidden_dim, normalize=True)

        self.mask_out_stride = 4
        self.mask_feat_stride = 4
        feature_channels = [backbone.num_channels[0]] + 3 * [hidden_dim]
        self.pixel_decoder = CrossModalFPNDecoder(feature_channels, hidden_dim, mask_dim, dim_feedforward,
                                                  dropout=head_dropout)

        in_channels = mask_dim + (2 if rel_coord else 0)
        self.weight_nums, self.bias_nums = [], []
        for layer in range(controller_layers):
            out_ch = 1 if layer == controller_layers - 1 else dynamic_mask_channels
            in_ch = in_channels if layer == 0 else dynamic_mask_channels
            self.weight_nums.append(in_ch * out_ch)
            self.bias_nums.append(out_ch)
        self.num_gen_params = sum(self.weight_nums) + sum(self.bias_nums)
        self.controller = MLP(hidden_dim, hidden_dim, self.num_gen_params, 3)
        for layer in self.controller.layers:
            nn.init.zeros_(layer.bias)
            nn.init.xavier_uniform_(layer.weight)

    # ------------------------------------------------------------------ construction (plug-in contract)
    @staticmethod
    def add_args(parser: Any) -> None:
        """ReferFormer's flags are the shared ones in opts.py; nothing extra."""

    @classmethod
    def build(cls, args: Any) -> tuple[nn.Module, nn.Module, dict[str, nn.Module]]:
        from .criterion import build_criterion
        from .postprocessors import build_postprocessors

        num_classes = num_classes_for(args)
        model = cls.from_args(args, num_classes)
        return model, build_criterion(args, num_classes), build_postprocessors(args)

    @classmethod
    def model_kwargs(cls, args: Any) -> dict[str, Any]:
        """Constructor arguments read from args; subclasses extend it with their own."""
        return dict(num_queries=args.num_queries, num_feature_levels=args.num_feature_levels,
                    num_frames=args.num_frames, mask_dim=args.mask_dim, dim_feedforward=args.dim_feedforward,
                    controller_layers=args.controller_layers, dynamic_mask_channels=args.dynamic_mask_channels,
                    aux_loss=args.aux_loss, with_box_refine=args.with_box_refine,
                    freeze_text_encoder=args.freeze_text_encoder, rel_coord=args.rel_coord,
                    text_pooling=args.text_pooling, head_dropout=args.head_dropout,
                    frozen_text_eval=args.frozen_text_eval)

    @classmethod
    def build_transformer(cls, args: Any) -> DeformableTransformer:
        """The deformable transformer; methods that change the encoder/decoder build theirs here."""
        return build_deformable_transformer(args)

    @classmethod
    def from_args(cls, args: Any, num_classes: int) -> "ReferFormer":
        if getattr(args, "two_stage", False):
            raise ValueError("--two_stage is not supported by ReferFormer-style models")
        tokenizer, text_encoder = build_text_encoder(args)
        return cls(build_backbone(args), cls.build_transformer(args), tokenizer, text_encoder,
                   num_classes=num_classes, **cls.model_kwargs(args))

    @classmethod
    def named_lr_groups(cls, args: Any) -> list[tuple[list[str], float]]:
        """(name substrings, lr) of every optimiser group except the default one, in upstream's order."""
        return [(args.lr_backbone_names, args.lr_backbone),
                (args.lr_text_encoder_names, args.lr_text_encoder),
                (args.lr_linear_proj_names, args.lr * args.lr_linear_proj_mult)]

    @classmethod
    def param_groups(cls, model: nn.Module, args: Any) -> list[dict[str, Any]]:
        """AdamW groups: the default group at --lr first, then ``named_lr_groups`` (empty groups dropped)."""
        return param_groups_by_name(model, args.lr, cls.named_lr_groups(args))

    def describe_partial_load(self, missing: Sequence[str]) -> list[str]:
        """The modules (or lone tensors) that a non-strict load left entirely at their initialisation.

        ``missing`` are the missing keys of the load. A module is named when every state-dict entry under
        it is missing; the shortest such name is reported, in model order, so loading e.g. a ReferFormer
        checkpoint into a method lists exactly the method's new modules.
        """
        return fresh_modules(list(self.state_dict()), missing)

    def train(self, mode: bool = True) -> "ReferFormer":
        """As nn.Module.train, except that a frozen text encoder stays in eval mode with --frozen_text_eval."""
        super().train(mode)
        if self.frozen_text_eval:
            self.text_encoder.eval()
            self.text_cache.clear()
        return self

    # ------------------------------------------------------------------ stages
    def run_text_encoder(self, captions: Sequence[str], device: torch.device) -> EncodedText:
        """The text encoder's word states [B, L, C], padding mask [B, L] and sentence vector [B, C]."""
        tokens = tokenize(self.tokenizer, captions, device, encoder_token_limit(self.tokenizer, self.text_encoder))
        encoded = self.text_encoder(**tokens)
        sentence = sentence_feature(encoded, tokens["attention_mask"], self.text_pooling)
        return encoded.last_hidden_state, tokens["attention_mask"].ne(1), sentence

    def encode_text(self, captions: Sequence[str], device: torch.device) -> TextFeatures:
        """Word features [B, L, C] and the sentence feature [B, C], both through the shared resizer.

        While training with --frozen_text_eval the encoder outputs come from ``text_cache`` (they depend only
        on the caption); it is emptied whenever the model enters train mode, so loaded weights are never stale.
        """
        if self.training and self.frozen_text_eval:
            hidden, pad_mask, sentence = self.text_cache.lookup(
                captions, lambda missing: self.run_text_encoder(missing, device), device)
        else:
            hidden, pad_mask, sentence = self.run_text_encoder(captions, device)
        return TextFeatures(NestedTensor(self.resizer(hidden), pad_mask), self.resizer(sentence))

    def fuse(self, src: Tensor, text: TextFeatures, text_pos: Tensor, num_frames: int) -> Tensor:
        """Multiplicative early fusion of one level [bt, C, h, w] with the words (frames share the sentence)."""
        bt, c, h, w = src.shape
        fused = self.fusion_module(clip_tokens(src, num_frames), text.words.tensors.transpose(0, 1),
                                   text.words.mask, text_pos)
        return fused.reshape(num_frames, h, w, bt // num_frames, c).permute(3, 0, 4, 1, 2).reshape(bt, c, h, w)

    def update_text(self, text: TextFeatures, src: Tensor, mask: Tensor, pos: Tensor,
                    num_frames: int) -> TextFeatures:
        """Language-from-vision step at one level, before that level's early fusion.

        ``text`` is the text state the decoder queries will be built from (the encoded text at the first
        level, then what this returned for the previous level); src/pos are the projected, not yet fused
        level [bt, C, h, w], mask [bt, h, w]. ReferFormer reads nothing from vision: the text is unchanged.
        """
        return text

    def build_levels(self, features: list[NestedTensor], pos: list[Tensor], text: TextFeatures,
                     num_frames: int) -> tuple[list[Tensor], list[Tensor], list[Tensor], TextFeatures]:
        """Project backbone levels 8x..32x (+ extra stride-2 levels) and fuse each with the words.

        Also returns the query text: ``update_text`` applied level by level (ReferFormer: ``text`` itself).
        The visual fusion always reads the encoded ``text``.
        """
        text_pos = self.text_pos(text.words.mask).permute(2, 0, 1)
        query_text = text
        srcs, masks, poses = [], [], []
        for lvl, (feat, p) in enumerate(zip(features[-3:], pos[-3:])):
            src = self.input_proj[lvl](feat.tensors)
            query_text = self.update_text(query_text, src, feat.mask, p, num_frames)
            srcs.append(self.fuse(src, text, text_pos, num_frames))
            masks.append(feat.mask)
            poses.append(p)
        source = features[-1].tensors
        for lvl in range(len(srcs), self.num_feature_levels):
            src = self.input_proj[lvl](source)
            mask = F.interpolate(features[-1].mask[None].float(), size=src.shape[-2:]).bool()[0]
            poses.append(self.backbone[1](mask).to(src.dtype))
            query_text = self.update_text(query_text, src, mask, poses[-1], num_frames)
            srcs.append(self.fuse(src, text, text_pos, num_frames))
            masks.append(mask)
            source = srcs[-1]
        return srcs, masks, poses, query_text

    def build_queries(self, text: TextFeatures, num_frames: int) -> tuple[Tensor, Tensor]:
        """(query_pos, tgt) for every frame: learned slot embeddings and the repeated sentence feature."""
        b = text.sentence.shape[0]
        query_pos = self.query_embed.weight[None].expand(b * num_frames, -1, -1)
        tgt = text.sentence[:, None, None].expand(-1, num_frames, self.num_queries, -1).flatten(0, 1)
        return query_pos, tgt

    def predict_boxes(self, tout: TransformerOutput) -> tuple[Tensor, Tensor]:
        """Per decoder layer class logits [L, bt, Q, K] and boxes [L, bt, Q, 4]."""
        classes, coords = [], []
        for lvl in range(tout.hs.shape[0]):
            reference = inverse_sigmoid(tout.init_reference if lvl == 0 else tout.inter_references[lvl - 1])
            tmp = self.bbox_embed[lvl](tout.hs[lvl])
            if reference.shape[-1] == 4:
                tmp = tmp + reference
            else:
                tmp = torch.cat([tmp[..., :2] + reference, tmp[..., 2:]], -1)
            classes.append(self.class_embed[lvl](tout.hs[lvl]))
            coords.append(tmp.sigmoid())
        return torch.stack(classes), torch.stack(coords)

    def predict_masks(self, tout: TransformerOutput, mask_features: Tensor, sizes: Tensor, b: int,
                      num_frames: int) -> Tensor:
        """Dynamic-conv mask logits for every decoder layer: [L, B, T, Q, h, w] at stride 4."""
        feats = mask_features.reshape(b, num_frames, *mask_features.shape[1:])
        params = self.controller(tout.hs)
        masks = []
        for lvl in range(tout.hs.shape[0]):
            layer_params = params[lvl].reshape(b, num_frames, self.num_queries, -1)
            coords = None
            if self.rel_coord:
                ref = tout.inter_references[lvl][..., :2].reshape(b, num_frames, self.num_queries, 2)
                coords = relative_coordinates(ref, sizes, feats.shape[-2], feats.shape[-1], self.mask_feat_stride)
            masks.append(dynamic_mask_head(feats, layer_params, coords, self.weight_nums, self.bias_nums))
        return torch.stack(masks)

    # ------------------------------------------------------------------ forward
    def forward(self, samples: NestedTensor | Sequence[Tensor], captions: Sequence[str],
                targets: list[dict[str, Any]]) -> dict[str, Any]:
        """samples: NestedTensor [B, T, 3, H, W] (or a list of [T, 3, h, w] clips); one caption per target.

        There is one target per clip, unless the targets carry ``clip_index`` (util.misc.collate_fn with
        several expressions per clip): then the backbone reads each clip once and its features serve every
        expression of that clip, and B becomes the number of targets.
        """
        if not isinstance(samples, NestedTensor):
            samples = nested_tensor_from_videos_list(samples, size_divisibility=1)
        b, num_frames = samples.tensors.shape[:2]
        features, pos = self.backbone(samples)
        if "clip_index" in targets[0]:
            features, pos = share_clip_features(features, pos, targets, num_frames)
            b = len(targets)
        if "valid_indices" in targets[0]:
            keep = torch.cat([t["valid_indices"].to(features[0].tensors.device) + i * num_frames
                              for i, t in enumerate(targets)])
            features, pos = select_frames(features, pos, keep)
            num_frames = 1
        text = self.encode_text(captions, features[0].tensors.device)
        srcs, masks, poses, query_text = self.build_levels(features, pos, text, num_frames)
        query_pos, tgt = self.build_queries(query_text, num_frames)
        tout = self.transformer(srcs, tgt, masks, poses, query_pos, num_frames)
        return self.forward_heads(tout, features, pos, text, targets, b, num_frames)

    def forward_heads(self, tout: TransformerOutput, features: list[NestedTensor], pos: list[Tensor],
                      text: TextFeatures, targets: list[dict[str, Any]], b: int, num_frames: int) -> dict[str, Any]:
        """Boxes, classes and masks of every decoder layer, arranged [B, T, Q, ...]."""
        outputs_class, outputs_coord = self.predict_boxes(tout)
        pixel_inputs = [features[0].tensors] + tout.memory_features
        mask_features = self.pixel_decoder(pixel_inputs, [f.mask for f in features], pos,
                                           text.words.tensors, text.words.mask, num_frames)
        sizes = torch.stack([torch.as_tensor(t["size"], device=mask_features.device) for t in targets])
        outputs_mask = self.predict_masks(tout, mask_features, sizes, b, num_frames)

        def per_clip(x: Tensor) -> Tensor:
            return x.reshape(x.shape[0], b, num_frames, *x.shape[2:])

        outputs_class, outputs_coord = per_clip(outputs_class), per_clip(outputs_coord)
        out: dict[str, Any] = {"pred_logits": outputs_class[-1], "pred_boxes": outputs_coord[-1],
                               "pred_masks": outputs_mask[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": c, "pred_boxes": bx, "pred_masks": m}
                                  for c, bx, m in zip(outputs_class[:-1], outputs_coord[:-1], outputs_mask[:-1])]
        if not self.training:
            refs = tout.inter_references[-2] if tout.inter_references.shape[0] > 1 else tout.init_reference[None]
            out["reference_points"] = refs[..., :2].reshape(b, num_frames, self.num_queries, 2)
        return out


def share_clip_features(features: list[NestedTensor], pos: list[Tensor], targets: Sequence[dict[str, Any]],
                        num_frames: int) -> tuple[list[NestedTensor], list[Tensor]]:
    """Backbone levels [clips * T, ...] -> [targets * T, ...]: target i gets the frames of clip ``clip_index``."""
    device = features[0].tensors.device
    clips = torch.as_tensor([int(t["clip_index"]) for t in targets], device=device)
    frames = (clips[:, None] * num_frames + torch.arange(num_frames, device=device)).flatten()
    return select_frames(features, pos, frames)


def select_frames(features: list[NestedTensor], pos: list[Tensor], frames: Tensor) -> tuple[list[NestedTensor],
                                                                                           list[Tensor]]:
    """The rows ``frames`` (indices into the flattened frames) of every level, its mask and its position code."""
    return ([NestedTensor(f.tensors.index_select(0, frames), f.mask.index_select(0, frames)) for f in features],
            [p.index_select(0, frames) for p in pos])


def clip_tokens(maps: Tensor, num_frames: int) -> Tensor:
    """Per-frame maps [(b t), C, h, w] -> one token sequence per clip [(t h w), b, C] (frames first)."""
    bt, c, h, w = maps.shape
    b = bt // num_frames
    return maps.reshape(b, num_frames, c, h, w).permute(1, 3, 4, 0, 2).reshape(-1, b, c)


def param_groups_by_name(model: nn.Module, default_lr: float,
                         named: Sequence[tuple[Sequence[str], float]]) -> list[dict[str, Any]]:
    """Trainable parameters split by name substring: a parameter joins the first of ``named`` whose
    substrings it contains, else the default group (listed first). Empty groups are dropped."""
    groups: list[dict[str, Any]] = [{"params": [], "lr": default_lr}] + [{"params": [], "lr": lr} for _, lr in named]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = next((i + 1 for i, (keys, _) in enumerate(named) if any(k in name for k in keys)), 0)
        groups[index]["params"].append(param)
    return [g for g in groups if g["params"]]


def fresh_modules(state_keys: Sequence[str], missing: Sequence[str]) -> list[str]:
    """Shortest dotted prefixes all of whose ``state_keys`` are in ``missing``, in ``state_keys`` order."""
    missing_set = set(missing)
    total: dict[str, int] = {}
    absent: dict[str, int] = {}
    for key in state_keys:
        parts = key.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            total[prefix] = total.get(prefix, 0) + 1
            absent[prefix] = absent.get(prefix, 0) + (key in missing_set)
    names: dict[str, None] = {}
    for key in state_keys:
        if key in missing_set:
            parts = key.split(".")
            prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            names[next(p for p in prefixes if absent[p] == total[p])] = None
    return list(names)


def num_classes_for(args: Any) -> int:
    """K = 1 with --binary, else the dataset's category count (91 for image datasets, as upstream)."""
    if args.binary:
        return 1
    return NUM_CLASSES.get(args.dataset_file, 91)


def build_text_encoder(args: Any) -> tuple[Any, nn.Module]:
    """Load the text encoder pretrained, or only its architecture when a checkpoint will supply the weights."""
    init = getattr(args, "text_encoder_init", None) or ("config" if getattr(args, "resume", "") else "pretrained")
    if init == "pretrained":
        return load_text_encoder(args.text_encoder_type)
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(args.text_encoder_type)
    return text_encoder_from_config(config, AutoTokenizer.from_pretrained(args.text_encoder_type))
