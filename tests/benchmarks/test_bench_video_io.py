"""Video decoding (datasets.video_io) and writing (util.video): frame order, partial decoding, formats."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.video_io import VideoReadError, count_decoded_frames, count_frames, read_frames, video_metadata
from tests.benchmarks.bench_fixtures import frame_image, write_mp4
from util.video import VideoWriter


def _red(image: Image.Image) -> float:
    return float(np.asarray(image)[..., 0].mean())


def test_read_selected_frames_in_the_order_asked(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "v.mp4", [frame_image(t) for t in range(6)], fps=5)
    assert count_frames(path) == 6 == count_decoded_frames(path)
    assert video_metadata(path)[1] == pytest.approx(5.0)
    frames = read_frames(path, [4, 1, 1, 0])
    assert [f.size for f in frames] == [(64, 48)] * 4
    assert np.allclose([_red(f) for f in frames], [160, 40, 40, 0], atol=8)
    with pytest.raises(VideoReadError, match="decoded 6 frames"):
        read_frames(path, [2, 6])
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_frames(tmp_path / "missing.mp4", [0])


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_writer_round_trip(tmp_path: Path, suffix: str) -> None:
    frames = [frame_image(t, 47, 63) for t in range(4)]  # odd sizes are padded for the encoder
    with VideoWriter(tmp_path / f"out{suffix}", fps=8) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.path == tmp_path / f"out{suffix}" and not list(tmp_path.glob(".*"))
    if suffix == ".mp4":
        decoded = read_frames(writer.path, [0, 3])
        assert decoded[0].size == (64, 48)
        assert np.allclose([_red(f) for f in decoded], [0, 120], atol=8)
    else:
        with Image.open(writer.path) as gif:
            assert gif.n_frames == 4


def test_video_writer_keeps_no_partial_file_on_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frame 1 has size"):
        with VideoWriter(tmp_path / "bad.mp4", fps=8) as writer:
            writer.write(frame_image(0))
            writer.write(frame_image(1, 32, 32))
    assert list(tmp_path.iterdir()) == []
