"""Dataset registry: ``build_dataset(image_set, args)`` dispatches on ``args.dataset_file``.

A dataset module registers a builder ``fn(image_set, args) -> Dataset`` with
``@register_dataset(name)``. Built-in modules are imported only when their dataset is requested, so
a missing optional dependency of one dataset (e.g. a video decoder for A2D) never breaks the others.
"""
from __future__ import annotations

import importlib
from argparse import Namespace
from typing import Any, Callable, Optional

from torch.utils.data import Dataset

from datasets import samplers  # noqa: F401  (light, no optional dependencies; `datasets.samplers.X` works)

DatasetBuilder = Callable[[str, Namespace], Dataset]

DATASETS: dict[str, DatasetBuilder] = {}

# dataset name -> module that registers it on import
_BUILTIN_MODULES: dict[str, str] = {
    "ytvos": "datasets.ytvos",
    "synthetic": "datasets.synthetic",
    "davis": "datasets.davis",
    "a2d": "datasets.a2d",
    "jhmdb": "datasets.jhmdb",
    "refcoco": "datasets.refexp",
    "refcoco+": "datasets.refexp",
    "refcocog": "datasets.refexp",
    "all": "datasets.refexp",
    "joint": "datasets.refexp",
}


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator registering `fn(image_set, args) -> Dataset` under `name` (names are unique)."""
    def decorator(builder: DatasetBuilder) -> DatasetBuilder:
        if name in DATASETS and DATASETS[name] is not builder:
            raise ValueError(f"dataset {name!r} is already registered by {DATASETS[name].__module__}")
        DATASETS[name] = builder
        return builder
    return decorator


def available_datasets() -> list[str]:
    """Names that build_dataset accepts (registered or importable built-ins)."""
    return sorted(set(DATASETS) | set(_BUILTIN_MODULES))


def get_dataset_builder(name: str) -> DatasetBuilder:
    """The builder registered under `name`, importing its built-in module on first use."""
    if name not in DATASETS and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in DATASETS:
        raise ValueError(f"unknown dataset_file {name!r}; available: {', '.join(available_datasets())}")
    return DATASETS[name]


def build_dataset(image_set: str, args: Namespace) -> Dataset:
    """Build split `image_set` ('train', 'val'/'valid', 'test') of dataset `args.dataset_file`.

    A training set that cannot put several expressions on a clip refuses --expressions_per_clip > 1.
    """
    dataset = get_dataset_builder(args.dataset_file)(image_set, args)
    per_clip = getattr(args, "expressions_per_clip", 1)
    if image_set == "train" and per_clip > 1 and getattr(dataset, "expressions_per_clip", 1) != per_clip:
        raise ValueError(f"--expressions_per_clip {per_clip}: the '{args.dataset_file}' training set puts one "
                         f"expression on each clip; this option works with Ref-YTVOS-format sets (ytvos, synthetic)")
    return dataset


# An evaluator scores a model on a dataset's evaluation split with that benchmark's protocol:
# fn(model, postprocessors, args, device) -> dict of metrics (rank 0 holds the final numbers), or None
# when the dataset has nothing to score locally (e.g. Ref-YTVOS valid has no public annotations).
Evaluator = Callable[..., Optional[dict[str, Any]]]
EVALUATORS: dict[str, Evaluator] = {}


def register_evaluator(name: str) -> Callable[[Evaluator], Evaluator]:
    """Decorator registering the evaluation protocol of dataset `name` (used by main.py --eval and per epoch)."""
    def decorator(fn: Evaluator) -> Evaluator:
        EVALUATORS[name] = fn
        return fn
    return decorator


def get_evaluator(name: str) -> Optional[Evaluator]:
    """The evaluator of dataset `name` (importing its module first), or None if it has none."""
    get_dataset_builder(name)
    return EVALUATORS.get(name)
