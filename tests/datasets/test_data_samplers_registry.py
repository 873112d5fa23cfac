"""datasets/samplers.py and the build_dataset registry of datasets/__init__.py."""
from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

import datasets
from datasets import build_dataset, register_dataset
from datasets.samplers import DistributedSampler, EvalDistributedSampler

ROOT = Path(__file__).resolve().parents[2]


def test_distributed_sampler_pads_and_partitions() -> None:
    data = list(range(10))
    shards = [list(DistributedSampler(data, num_replicas=4, rank=r, shuffle=True, seed=0)) for r in range(4)]
    assert all(len(s) == 3 for s in shards)
    flat = [i for s in shards for i in s]
    assert sorted(set(flat)) == data and len(flat) == 12


def test_distributed_sampler_shuffles_by_epoch_deterministically() -> None:
    data = list(range(50))
    sampler = DistributedSampler(data, num_replicas=1, rank=0)
    first = list(sampler)
    assert first == list(DistributedSampler(data, num_replicas=1, rank=0)), "same epoch, same order"
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == data
    assert list(DistributedSampler(data, num_replicas=1, rank=0, shuffle=False)) == data


def test_eval_sampler_splits_contiguously_without_duplicates() -> None:
    data = list(range(10))
    shards = [list(EvalDistributedSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert [i for s in shards for i in s] == data
    assert [len(s) for s in shards] == [3, 3, 4]
    assert list(EvalDistributedSampler([1], num_replicas=2, rank=0)) == []


def test_sampler_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        EvalDistributedSampler([1, 2], num_replicas=2, rank=2)


def test_unknown_dataset_lists_available() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset_file 'nope'.*synthetic.*ytvos"):
        build_dataset("train", Namespace(dataset_file="nope"))


def test_registered_builder_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DATASETS", dict(datasets.DATASETS))
    calls = []

    @register_dataset("toy")
    def build_toy(image_set: str, args: Namespace) -> list:
        calls.append(image_set)
        return [args.value]

    assert build_dataset("valid", Namespace(dataset_file="toy", value=7)) == [7] and calls == ["valid"]
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy")(lambda image_set, args: [])


def test_ytvos_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    args = Namespace(dataset_file="ytvos", ytvos_path=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="absent"):
        build_dataset("train", args)


def test_dataset_modules_are_imported_lazily() -> None:
    code = "import sys, datasets; print('datasets.ytvos' in sys.modules, 'datasets.synthetic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr
