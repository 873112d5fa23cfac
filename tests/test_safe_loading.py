"""Checkpoints from strangers: weights-only loading with an allow-list, a planted pickle never runs."""
from __future__ import annotations

import argparse
import ast
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.convert_checkpoint import main as convert_main
from util.checkpoint import (CorruptCheckpointError, UnsafeCheckpointError, capture_rng_state, load_checkpoint,
                             plain_namespace, save_checkpoint)

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class TrustedExtra:
    """A harmless custom class, as a trusted third-party checkpoint might pickle."""

    def __init__(self) -> None:
        self.note = "trusted"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_planted_pickle_payload_is_refused_and_never_runs(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": Payload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "system" in message, "names the file and the refused global"
    assert "tools/convert_checkpoint.py --trust" in message, "says how to convert a trusted file"
    assert not marker.exists(), "the payload must not have run"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_official_style_checkpoint_with_namespace_args_loads(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "official.pth"
    args = argparse.Namespace(backbone="resnet50", lr_drop=[3, 5], masks=True, resume="")
    torch.save({"model": {"w": torch.arange(3.0)}, "optimizer": {"state": {}, "param_groups": []}, "epoch": 5,
                "args": args, "extra": np.arange(4, dtype=np.int64)}, path,
               _use_new_zipfile_serialization=not legacy)
    ckpt = load_checkpoint(path)
    assert ckpt["args"].lr_drop == [3, 5] and ckpt["epoch"] == 5
    assert torch.equal(ckpt["model"]["w"], torch.arange(3.0)) and ckpt["extra"].tolist() == [0, 1, 2, 3]


def test_our_checkpoints_stay_weights_only_loadable(tmp_path: Path) -> None:
    args = argparse.Namespace(output_dir=Path("out"), device=torch.device("cpu"), lr_drop=(3, 5),
                              callback=print, seed=42)
    plain = plain_namespace(args)
    assert vars(plain) == {"output_dir": "out", "device": "cpu", "lr_drop": (3, 5), "seed": 42}
    save_checkpoint({"args": plain, "rng": [capture_rng_state()]}, tmp_path / "ours.pth")
    assert load_checkpoint(tmp_path / "ours.pth")["args"].seed == 42


def test_corrupt_or_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"model": {"w": torch.ones(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptCheckpointError, match=r"ckpt\.pth: not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_convert_checkpoint_needs_trust_then_writes_a_safe_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "third_party.pth", tmp_path / "converted.pth"
    torch.save({"model": {"w": torch.ones(3)}, "args": argparse.Namespace(lr=1e-4, cfg=TrustedExtra()),
                "meta": TrustedExtra()}, src)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(src)
    with pytest.raises(SystemExit):
        convert_main([str(src), str(dst)])
    assert not dst.exists()
    assert convert_main([str(src), str(dst), "--trust"]) == 0
    converted = load_checkpoint(dst)
    assert torch.equal(converted["model"]["w"], torch.ones(3)) and vars(converted["args"]) == {"lr": 1e-4}


def _torch_load_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load" and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"]


def test_every_torch_load_in_the_project_is_weights_only() -> None:
    """tools/convert_checkpoint.py is the one explicit, --trust-gated exception."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = [f for f in files if not f.startswith("tests/") and f != "tools/convert_checkpoint.py"]
    assert files, "git ls-files found no Python files"
    offenders = []
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue
        for call in _torch_load_calls(path):
            flags = {k.arg: k.value for k in call.keywords}
            value = flags.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                offenders.append(f"{name}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


@pytest.fixture()
def http_root(tmp_path: Path):
    """A folder served on a loopback port: (folder, base URL)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_checkpoint_url_is_downloaded_once_hash_checked_and_loaded_safely(tmp_path: Path, http_root,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    served, base = http_root
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    source = tmp_path / "ckpt.pth"
    torch.save({"model": {"w": torch.ones(3)}, "args": argparse.Namespace(lr=1e-4)}, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    (served / f"good-{digest[:10]}.pth").write_bytes(source.read_bytes())
    (served / "bad-0123456789.pth").write_bytes(source.read_bytes())
    (served / "swin-b.pth").write_bytes(source.read_bytes())  # '-b' is part of the name, not a hash

    ckpt = load_checkpoint(f"{base}/good-{digest[:10]}.pth")
    assert torch.equal(ckpt["model"]["w"], torch.ones(3)) and ckpt["args"].lr == 1e-4
    cached = tmp_path / "hub" / "checkpoints" / f"good-{digest[:10]}.pth"
    assert cached.is_file()
    (served / f"good-{digest[:10]}.pth").unlink()  # the second load needs no server copy
    assert load_checkpoint(f"{base}/good-{digest[:10]}.pth")["args"].lr == 1e-4
    assert load_checkpoint(f"{base}/swin-b.pth")["args"].lr == 1e-4

    with pytest.raises(RuntimeError, match="invalid hash value"):
        load_checkpoint(f"{base}/bad-0123456789.pth")
    assert not (tmp_path / "hub" / "checkpoints" / "bad-0123456789.pth").exists()
    with pytest.raises(FileNotFoundError, match="download failed"):
        load_checkpoint(f"{base}/missing.pth")
