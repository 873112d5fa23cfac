"""Command-line flags shared by every entry point; names and defaults follow the ReferFormer release.

Flags that are ours (not upstream) say so in their help. Each registered method adds its own flags in a
group named after it (``add_args``), so ``--help`` lists everything that exists.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Optional, Sequence


def _optimisation(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", default=1e-4, type=float)
    g.add_argument("--lr_backbone", default=5e-5, type=float, help="<= 0 freezes the visual backbone")
    g.add_argument("--lr_backbone_names", default=["backbone.0"], type=str, nargs="+")
    g.add_argument("--lr_text_encoder", default=1e-5, type=float)
    g.add_argument("--lr_text_encoder_names", default=["text_encoder"], type=str, nargs="+")
    g.add_argument("--lr_linear_proj_names", default=["reference_points", "sampling_offsets"], type=str, nargs="+")
    g.add_argument("--lr_linear_proj_mult", default=1.0, type=float)
    g.add_argument("--batch_size", default=1, type=int, help="clips per process")
    g.add_argument("--weight_decay", default=5e-4, type=float)
    g.add_argument("--epochs", default=10, type=int)
    g.add_argument("--lr_drop", default=[6, 8], type=int, nargs="+", help="MultiStepLR milestones (epochs)")
    g.add_argument("--clip_max_norm", default=0.1, type=float, help="gradient clipping max norm (0 disables)")
    g.add_argument("--lr_schedule", default="step", choices=["step", "cosine"],
                   help="ours: step: MultiStepLR at the --lr_drop epochs (upstream); cosine: decay every iteration "
                        "from --lr to 0 over all --epochs (suits short runs, where an epoch is the whole budget)")
    g.add_argument("--amp", default="none", choices=["none", "bf16"],
                   help="ours: bf16: the model's forward pass under torch.autocast(bfloat16) (GPUs since Ampere, "
                        "recent CPUs) in training, evaluation, inference scripts and the demo; matching, losses, "
                        "the optimiser and post-processing stay in float32; none: float32 (upstream)")
    g.add_argument("--adamw_impl", default="auto", choices=["auto", "fused", "foreach"],
                   help="ours: AdamW kernel. fused: one kernel per step over all tensors (on CPU ~7x faster than "
                        "foreach for a ResNet-18, same update up to float rounding); auto: fused when every "
                        "parameter is a float tensor on CPU or CUDA, else foreach")


def _model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--pretrained_weights", type=str, default=None,
                   help="RefCOCO-pretrained checkpoint to fine-tune from (class heads are re-initialised)")
    g.add_argument("--with_box_refine", default=False, action="store_true")
    g.add_argument("--two_stage", default=False, action="store_true", help="unsupported, must stay off")
    g.add_argument("--backbone", default="resnet50", type=str,
                   help="resnet18, resnet34, resnet50, resnet101, swin_{t,s,b,l}_p4w7, video_swin_{t,s,b}_p4w7")
    g.add_argument("--backbone_pretrained", default=None, type=str,
                   help="ResNet, ours: 'imagenet' (torchvision download, the default when training without a "
                        "checkpoint), 'none' (random init), or a path to a torchvision-format state dict. "
                        "(Video-)Swin: a path to the official ImageNet / Kinetics checkpoint (default: random init)")
    g.add_argument("--backbone_norm", default="frozen_bn", choices=["frozen_bn", "bn"],
                   help="ours: frozen BatchNorm (upstream, for ImageNet weights) or trainable BatchNorm "
                        "(for training from scratch, e.g. the quickstart)")
    g.add_argument("--use_checkpoint", action="store_true", help="activation checkpointing (Swin backbones)")
    g.add_argument("--dilation", action="store_true", help="DC5: dilate the last ResNet stage")
    g.add_argument("--position_embedding", default="sine", type=str, choices=("sine", "learned"))
    g.add_argument("--num_feature_levels", default=4, type=int)
    g.add_argument("--enc_layers", default=4, type=int)
    g.add_argument("--dec_layers", default=4, type=int)
    g.add_argument("--dim_feedforward", default=2048, type=int)
    g.add_argument("--hidden_dim", default=256, type=int)
    g.add_argument("--dropout", default=0.1, type=float)
    g.add_argument("--nheads", default=8, type=int)
    g.add_argument("--num_frames", default=5, type=int)
    g.add_argument("--num_queries", default=5, type=int)
    g.add_argument("--dec_n_points", default=4, type=int)
    g.add_argument("--enc_n_points", default=4, type=int)
    g.add_argument("--pre_norm", action="store_true", help="unused (kept for upstream command lines)")
    g.add_argument("--text_encoder_type", default="roberta-base", type=str,
                   help="ours: transformers hub name or local directory of the text encoder and tokenizer")
    g.add_argument("--freeze_text_encoder", action="store_true")
    g.add_argument("--frozen_text_eval", action="store_true",
                   help="ours: with --freeze_text_encoder, keep the text encoder in eval mode while training (no "
                        "dropout noise in the frozen features; upstream leaves it in train mode)")
    g.add_argument("--text_pooling", default="pooler", choices=["pooler", "mean"],
                   help="ours: sentence feature = the encoder's pooler output (upstream) or mean of word features")
    g.add_argument("--text_encoder_init", default=None, choices=["pretrained", "config"],
                   help="ours: load pretrained text weights, or only the architecture because a checkpoint "
                        "supplies them (default: config when --resume is given, else pretrained)")
    g.add_argument("--masks", action="store_true", help="always on (kept for upstream command lines)")
    g.add_argument("--mask_dim", default=256, type=int)
    g.add_argument("--controller_layers", default=3, type=int)
    g.add_argument("--dynamic_mask_channels", default=8, type=int)
    g.add_argument("--no_rel_coord", dest="rel_coord", action="store_false")
    g.add_argument("--head_dropout", default=0.1, type=float,
                   help="ours: dropout in the text FeatureResizer and the cross-modal FPN blocks, which upstream "
                        "fixes at 0.1 whatever --dropout says (0 suits short from-scratch runs)")


def _loss(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loss and matcher")
    g.add_argument("--no_aux_loss", dest="aux_loss", action="store_false")
    g.add_argument("--set_cost_class", default=2, type=float)
    g.add_argument("--set_cost_bbox", default=5, type=float)
    g.add_argument("--set_cost_giou", default=2, type=float)
    g.add_argument("--set_cost_mask", default=2, type=float)
    g.add_argument("--set_cost_dice", default=5, type=float)
    g.add_argument("--cls_loss_coef", default=2, type=float)
    g.add_argument("--bbox_loss_coef", default=5, type=float)
    g.add_argument("--giou_loss_coef", default=2, type=float)
    g.add_argument("--mask_loss_coef", default=2, type=float)
    g.add_argument("--dice_loss_coef", default=5, type=float)
    g.add_argument("--eos_coef", default=0.1, type=float, help="unused (kept for upstream command lines)")
    g.add_argument("--focal_alpha", default=0.25, type=float)


def _data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset_file", default="ytvos",
                   help="ytvos, davis, a2d, jhmdb, refcoco, refcoco+, refcocog, all (the three RefCOCO sets), joint "
                        "(RefCOCO pseudo-clips + ytvos), synthetic (registered in datasets/)")
    g.add_argument("--coco_path", type=str, default="data/coco")
    g.add_argument("--ytvos_path", type=str, default="data/ref-youtube-vos")
    g.add_argument("--davis_path", type=str, default="data/ref-davis")
    g.add_argument("--a2d_path", type=str, default="data/a2d_sentences")
    g.add_argument("--jhmdb_path", type=str, default="data/jhmdb_sentences")
    g.add_argument("--synthetic_path", type=str, default="data/synthetic",
                   help="ours: synthetic Ref-YTVOS-format dataset (generated there if missing)")
    g.add_argument("--synthetic_seed", default=0, type=int, help="ours: seed of the generated synthetic dataset")
    g.add_argument("--synthetic_train_videos", default=300, type=int, help="ours: synthetic train videos")
    g.add_argument("--synthetic_valid_videos", default=60, type=int, help="ours: synthetic valid videos")
    g.add_argument("--synthetic_frames", default=10, type=int, help="ours: frames per synthetic video")
    g.add_argument("--synthetic_size", default=[96, 96], type=int, nargs=2, help="ours: synthetic frame H W")
    g.add_argument("--max_skip", default=3, type=int, help="unused (kept for upstream command lines)")
    g.add_argument("--max_size", default=640, type=int, help="max longer side of training resizes")
    g.add_argument("--train_short_sides", default=[288, 320, 352, 392, 416, 448, 480, 512], type=int, nargs="+",
                   help="ours: shorter-side choices of the training resize (upstream values by default)")
    g.add_argument("--crop_short_sides", default=[400, 500, 600], type=int, nargs="+",
                   help="ours: shorter sides before the random crop branch (upstream values by default)")
    g.add_argument("--crop_range", default=[384, 600], type=int, nargs=2,
                   help="ours: min/max crop side of the random crop branch")
    g.add_argument("--eval_short_side", default=360, type=int, help="ours: shorter side at inference")
    g.add_argument("--no_photometric", action="store_true", help="ours: disable photometric distortion")
    g.add_argument("--expressions_per_clip", default=1, type=int,
                   help="ours: Ref-YTVOS-format training: each clip also carries up to K-1 expressions of other "
                        "objects of its video (same frames and augmentation); the backbone reads the clip once for "
                        "all of them. --batch_size still counts clips (default 1: upstream sampling)")
    g.add_argument("--binary", action="store_true", help="class-agnostic: one 'referred' class")
    g.add_argument("--remove_difficult", action="store_true", help="unused (kept for upstream command lines)")


def _run(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--method", default="referformer", help="ours: registered method (see models/methods)")
    g.add_argument("--output_dir", default="output")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    g.add_argument("--seed", default=42, type=int)
    g.add_argument("--resume", default="", help="checkpoint to resume from / evaluate: a path or an http(s) URL "
                                                "(downloaded once into $TORCH_HOME/hub/checkpoints)")
    g.add_argument("--start_epoch", default=0, type=int)
    g.add_argument("--eval", action="store_true", help="evaluate only")
    g.add_argument("--num_workers", default=4, type=int)
    g.add_argument("--threshold", default=0.5, type=float, help="mask binarisation threshold")
    g.add_argument("--ngpu", default=8, type=int, help="GPUs for the inference scripts")
    g.add_argument("--split", default="valid", choices=["valid", "test"])
    g.add_argument("--visualize", action="store_true")
    g.add_argument("--world_size", default=1, type=int)
    g.add_argument("--dist_url", default="env://")
    g.add_argument("--cache_mode", action="store_true", help="unused (kept for upstream command lines)")
    g.add_argument("--print_freq", default=10, type=int, help="ours: log every N iterations")
    g.add_argument("--eval_every", default=1, type=int,
                   help="ours: validate every N epochs when the dataset has a scored valid split (0: never)")
    g.add_argument("--max_eval_expressions", default=0, type=int,
                   help="ours: score at most N valid expressions (0: all)")


def _add_optional_flags(parser: argparse.ArgumentParser, module_name: str, function: str) -> None:
    """Flags contributed by a subsystem module (distributed/resume, benchmarks), when that module exists."""
    import importlib.util

    if importlib.util.find_spec(module_name) is not None:
        getattr(importlib.import_module(module_name), function)(parser)


def get_args_parser(methods: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The shared parser (add_help False, used as a parent) plus every registered method's flag group."""
    from models.registry import METHODS, import_builtin_methods

    parser = argparse.ArgumentParser("RVOS training and evaluation", add_help=False)
    for section in (_optimisation, _model, _loss, _data, _run):
        section(parser)
    for module_name, function in (("util.run_flags", "add_run_args"), ("util.benchmark_flags", "add_benchmark_args")):
        _add_optional_flags(parser, module_name, function)
    import_builtin_methods()
    for name in methods or sorted(METHODS):
        METHODS[name].add_args(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None, description: str = "RVOS") -> argparse.Namespace:
    """Parse an entry point's command line and fill derived fields (device, masks)."""
    import torch

    parser = argparse.ArgumentParser(description, parents=[get_args_parser()])
    args = parser.parse_args(argv)
    from models.registry import apply_method_defaults

    apply_method_defaults(args, argv, parser)
    args.masks = True
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args
