"""demo.py as a user runs it (folder of frames, video file) and its messages on bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import demo
from datasets.video_io import count_decoded_frames
from tests.benchmarks.bench_fixtures import checkpoint_of_method, frame_image, write_mp4

ROOT = Path(__file__).resolve().parents[2]


def _frames_folder(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    for t in range(count):  # 'frame_10' after 'frame_9': numeric order
        Image.fromarray(frame_image(t)).save(folder / f"frame_{8 + t}.jpg")
    return folder


def _run_demo(argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "demo.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_demo_on_a_folder_with_two_expressions(tmp_path: Path, tiny_session_flags: list[str],
                                               tiny_checkpoint: Path) -> None:
    folder = _frames_folder(tmp_path / "frames")
    out = tmp_path / "out"
    done = _run_demo(tiny_session_flags + ["--resume", str(tiny_checkpoint), "--demo_path", str(folder),
                                           "--demo_exp", "a red circle", "--demo_exp", "the blue  square",
                                           "--output_dir", str(out), "--clip_len", "2"])
    assert done.returncode == 0, done.stderr[-2000:]
    names = ["frame_8", "frame_9", "frame_10"]
    for k in (0, 1):
        for name in names:
            mask = np.asarray(Image.open(out / "masks" / str(k) / f"{name}.png"))
            assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
    assert sorted(p.stem for p in (out / "overlays").iterdir()) == sorted(names)
    summary = json.loads((out / "expressions.json").read_text())
    assert [e["text"] for e in summary["expressions"]] == ["a red circle", "the blue square"]
    assert count_decoded_frames(summary["video"]) == 3


def test_demo_on_a_video_file(tmp_path: Path, tiny_session_flags: list[str], tiny_checkpoint: Path) -> None:
    video = write_mp4(tmp_path / "clip.mp4", [frame_image(t) for t in range(5)], fps=5)
    out = tmp_path / "out"
    done = _run_demo(tiny_session_flags + ["--resume", str(tiny_checkpoint), "--demo_path", str(video),
                                           "--demo_exp", "a big truck on the road", "--output_dir", str(out),
                                           "--clip_len", "3"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (out / "masks" / "0").iterdir()) == [f"{t:05d}.png" for t in range(5)]
    assert (out / "overlay.mp4").is_file() and count_decoded_frames(out / "overlay.mp4") == 5
    assert "5 frames" in done.stdout


@pytest.mark.parametrize("case", ["empty_folder", "unreadable", "mixed_sizes", "empty_expression", "no_expression",
                                  "single_image"])
def test_bad_input_is_named_in_the_error(case: str, tmp_path: Path, tiny_session_flags: list[str],
                                         tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _frames_folder(tmp_path / "frames") if case != "empty_folder" else tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    expressions = ["--demo_exp", "a person"]
    expected = str(folder)
    if case == "unreadable":
        (folder / "frame_99.jpg").write_bytes(b"not an image")
        expected = "frame_99.jpg"
    elif case == "mixed_sizes":
        Image.fromarray(frame_image(0, 40, 40)).save(folder / "frame_50.png")
        expected = "frame_50.png: frame size 40x40 differs"
    elif case == "empty_expression":
        expressions += ["--demo_exp", "  "]
        expected = "--demo_exp number 2 is empty"
    elif case == "no_expression":
        expressions, expected = [], "no expression given"
    demo_path = folder / "frame_8.jpg" if case == "single_image" else folder
    rc = demo.main(tiny_session_flags + ["--resume", str(tiny_checkpoint), "--demo_path", str(demo_path),
                                         "--output_dir", str(tmp_path / "out"), *expressions])
    assert rc == 1
    assert expected in capsys.readouterr().err


def test_checkpoint_of_another_method_is_refused(tmp_path: Path, tiny_session_flags: list[str],
                                                 tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    other = checkpoint_of_method(tiny_checkpoint, tmp_path / "bifit.pth", "bifit")
    rc = demo.main(tiny_session_flags + ["--resume", str(other), "--demo_path", str(_frames_folder(tmp_path / "f")),
                                         "--demo_exp", "a person", "--output_dir", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "method 'bifit'" in err and "--method bifit" in err
