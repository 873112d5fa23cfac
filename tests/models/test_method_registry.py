"""The method plug-in contract: registration, per-method flag defaults, optimiser groups, partial-load reports,
and that every registered method builds and runs on the tiny configuration."""
from __future__ import annotations

import argparse
import re

import pytest
import torch
from torch import nn

from rvos_testing import ROOT
from models import build_model
from models.referformer import ReferFormer, fresh_modules
from models.registry import (METHODS, apply_method_defaults, get_method, given_on_command_line, import_builtin_methods,
                             register_method)
from opts import get_args_parser, parse_args
from util.misc import nested_tensor_from_videos_list

import_builtin_methods()


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(parents=[get_args_parser()])


def _parse_with_method_defaults(argv: list[str]) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    apply_method_defaults(args, argv, parser)
    return args


# ---------------------------------------------------------------------------------------- registry
def test_registration_rejects_duplicates_and_incomplete_classes() -> None:
    get_method("referformer")
    with pytest.raises(ValueError, match="already registered"):
        register_method("referformer")(type("Other", (ReferFormer,), {}))
    with pytest.raises(TypeError, match="must define build"):
        register_method("incomplete")(type("Incomplete", (), {"add_args": staticmethod(lambda p: None)}))
    assert "incomplete" not in METHODS


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="referformer"):
        get_method("no_such_method")


def test_shared_code_never_branches_on_the_method_name() -> None:
    """Methods plug in through the registry; shared files must not test args.method."""
    shared = [ROOT / "main.py", ROOT / "engine.py", ROOT / "opts.py", *ROOT.glob("datasets/**/*.py"),
              *(p for p in ROOT.glob("models/*.py"))]
    pattern = re.compile(r"\.method\s*(==|!=|in\s)|\[[\"']method[\"']\]\s*(==|!=|in\s)")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in shared if p.is_file()
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


# ---------------------------------------------------------------------------------------- method defaults
def test_method_defaults_apply_to_flags_not_given() -> None:
    args = _parse_with_method_defaults(["--method", "bifit"])
    assert (args.lr, args.lr_backbone, args.num_frames) == (5e-5, 1e-5, 6)
    assert args.query_enc_layers == 1 and args.lr_text_fusion == 5e-5


def test_explicit_flags_win_even_when_equal_to_the_shared_default() -> None:
    args = _parse_with_method_defaults(["--method", "bifit", "--lr", "1e-4", "--lr_backbone=2e-5", "--num_fr", "3"])
    assert (args.lr, args.lr_backbone, args.num_frames) == (1e-4, 2e-5, 3)


def test_referformer_keeps_the_shared_defaults() -> None:
    args = _parse_with_method_defaults(["--lr", "3e-4"])
    assert (args.lr, args.lr_backbone, args.num_frames) == (3e-4, 5e-5, 5)


def test_overrides_of_undefined_flags_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser()
    args = parser.parse_args(["--method", "bifit"])
    cls = get_method("bifit")
    monkeypatch.setattr(cls, "default_overrides", {**cls.default_overrides, "no_such_flag": 1})
    with pytest.raises(ValueError, match="no_such_flag"):
        apply_method_defaults(args, ["--method", "bifit"], parser)


def test_given_on_command_line_sees_aliases_and_store_false() -> None:
    explicit = given_on_command_line(_parser(), ["--no_rel_coord", "--with_box_refine", "--lr_drop", "3", "5",
                                                 "--unknown_flag", "1"])
    assert explicit == {"rel_coord", "with_box_refine", "lr_drop"}


def test_default_overrides_name_real_flags_with_matching_types() -> None:
    parser = _parser()
    defaults = {a.dest: a.default for a in parser._actions}
    for name, cls in METHODS.items():
        for flag, value in cls.default_overrides.items():
            assert flag in defaults, f"{name}.default_overrides: no flag --{flag}"
            assert type(value) is type(defaults[flag]), f"{name}: --{flag} {value!r} vs {defaults[flag]!r}"


# ---------------------------------------------------------------------------------------- optimiser, loading
def test_optimizer_uses_each_methods_param_groups(tiny_flags: list[str]) -> None:
    from main import build_optimizer

    for name in sorted(METHODS):
        args = parse_args(tiny_flags + ["--method", name, "--lr", "1e-3", "--lr_backbone", "1e-4",
                                        "--lr_linear_proj_mult", "0.5"])
        model, _, _ = build_model(args)
        optimizer, _ = build_optimizer(model, args)
        expected = METHODS[name].param_groups(model, args)
        assert [(g["lr"], [id(p) for p in g["params"]]) for g in optimizer.param_groups] == \
               [(g["lr"], [id(p) for p in g["params"]]) for g in expected], name


def test_fresh_modules_names_the_smallest_wholly_missing_modules() -> None:
    keys = ["a.x.w", "a.x.b", "a.y.w", "b.w", "b.v", "c", "d.e.f"]
    assert fresh_modules(keys, ["a.x.w", "a.x.b", "b.v", "c", "d.e.f"]) == ["a.x", "b.v", "c", "d"]
    assert fresh_modules(keys, []) == []


def test_official_key_maps_target_existing_parameters(tiny_flags: list[str]) -> None:
    for name, cls in METHODS.items():
        if not cls.official_key_map:
            continue
        model, _, _ = build_model(parse_args(tiny_flags + ["--method", name]))
        keys = list(model.state_dict())
        for official, ours in cls.official_key_map.items():
            assert any(k.startswith(ours) for k in keys), f"{name}: {official!r} -> {ours!r} matches nothing"
            assert not any(k.startswith(official) for k in keys), f"{name}: {official!r} is already our name"


# ---------------------------------------------------------------------------------------- every method runs
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_builds_and_runs_tiny(tiny_flags: list[str], method: str) -> None:
    model, criterion, postprocessors = build_model(parse_args(tiny_flags + ["--method", method]))
    assert isinstance(model, nn.Module) and isinstance(criterion, nn.Module) and postprocessors
    torch.manual_seed(0)
    samples = nested_tensor_from_videos_list([torch.randn(2, 3, 64, 64)])
    out = model(samples, ["a red circle"], [{"size": torch.tensor([64, 64])}])
    assert out["pred_masks"].shape[:3] == (1, 2, model.num_queries)
    assert model.describe_partial_load([]) == []
