"""Flags of the benchmark entry points (inference scripts, demo, A2D/JHMDB evaluation).

``opts.get_args_parser()`` calls :func:`add_benchmark_args`, so every entry point accepts them; each is
ours (not in the ReferFormer release) and says where it applies.
"""
from __future__ import annotations

import argparse


def add_benchmark_args(parser: argparse.ArgumentParser) -> None:
    """Add the 'benchmarks' flag group to `parser`."""
    g = parser.add_argument_group("benchmarks (inference, demo, A2D/JHMDB evaluation)")
    g.add_argument("--clip_len", default=None, type=int,
                   help="ours: frames per forward pass at inference (0: the whole video as one clip). Default: "
                        "0 for inference_ytvos.py (upstream), the method's davis_clip_len for inference_davis.py (36 "
                        "for ReferFormer, as upstream), 36 for demo.py")
    g.add_argument("--query_selection", default=None, choices=["video", "chunk"],
                   help="ours: with --clip_len chunks, pick the query slot once from scores averaged over the "
                        "whole video ('video') or independently per chunk ('chunk', what upstream "
                        "inference_davis.py does). Default: chunk for inference_davis.py, video elsewhere")
    g.add_argument("--overwrite", action="store_true",
                   help="ours: inference scripts recompute expressions/videos whose outputs already exist "
                        "(default: skip them, so an interrupted run resumes)")
    g.add_argument("--clean_captions", action="store_true",
                   help="ours: lower-case and collapse whitespace of expressions at inference, as training does "
                        "(upstream inference feeds them raw to the case-sensitive RoBERTa; spec 11.1 #18)")
    g.add_argument("--a2d_top1_map", action="store_true",
                   help="ours: A2D/JHMDB evaluation also reports mAP with only the top-scoring query of each "
                        "sample as prediction (top1_mAP, top1_AP50, top1_AP75); the standard mAP uses all queries")
    g.add_argument("--demo_path", default=None, type=str,
                   help="ours: demo.py input, a folder of frames (jpg/png) or a video file")
    g.add_argument("--demo_exp", default=None, action="append", type=str,
                   help="ours: demo.py referring expression; repeat the flag for several objects")
    g.add_argument("--video_fps", default=None, type=float,
                   help="ours: frame rate of demo.py's overlay video (default: the input video's, 10 for frames)")
