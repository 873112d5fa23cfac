"""Ref-DAVIS17 after ``tools/data/convert_davis_to_ytvos.py``: the Ref-YouTube-VOS layout under --davis_path.

Training clips and whole-video items come from the Ref-YTVOS readers (spec 5.1/5.2) with the
78-category DAVIS table. The valid split keeps its annotations, so ``main.py --dataset_file davis
--eval`` scores each expression locally (J, F per expression); the number papers report comes from
``inference_davis.py`` + ``eval_davis.py`` (four annotator runs, DAVIS-2017 unsupervised protocol).
"""
from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any, Optional

from torch.utils.data import Dataset

from datasets import register_dataset, register_evaluator
from datasets.ytvos import build_ytvos_split, evaluate_ytvos_format

DAVIS_CATEGORY_NAMES = (
    "airplane", "backpack", "ball", "bear", "bicycle", "bird", "boat", "bottle", "box", "bus", "camel", "car",
    "carriage", "cat", "cellphone", "chamaleon", "cow", "deer", "dog", "dolphin", "drone", "elephant", "excavator",
    "fish", "goat", "golf cart", "golf club", "grass", "guitar", "gun", "helicopter", "horse", "hoverboard", "kart",
    "key", "kite", "koala", "leash", "lion", "lock", "mask", "microphone", "monkey", "motorcycle", "oar", "paper",
    "paraglide", "person", "pig", "pole", "potted plant", "puck", "rack", "rhino", "rope", "sail", "scale",
    "scooter", "selfie stick", "sheep", "skateboard", "ski", "ski poles", "snake", "snowboard", "stick", "stroller",
    "surfboard", "swing", "tennis racket", "tractor", "trailer", "train", "truck", "turtle", "varanus", "violin",
    "wheelchair",
)
# The 78 DAVIS-2017 semantic categories (davis_semantics.json names), alphabetical ids as in ReferFormer.
DAVIS_CATEGORIES: dict[str, int] = {name: i for i, name in enumerate(DAVIS_CATEGORY_NAMES)}


@register_dataset("davis")
def build_davis(image_set: str, args: Namespace) -> Dataset:
    """Converted Ref-DAVIS17 at args.davis_path ('val' is an alias of 'valid')."""
    return build_ytvos_split(Path(args.davis_path), image_set, args, categories=DAVIS_CATEGORIES)


@register_evaluator("davis")
def evaluate_davis(model: Any, postprocessors: dict, args: Namespace, device: Any,
                   **kwargs: Any) -> Optional[dict[str, Any]]:
    """Per-expression J, F and J&F on the annotated valid split (a quick check, not the paper protocol)."""
    return evaluate_ytvos_format(Path(args.davis_path), model, postprocessors, args, device, **kwargs)
