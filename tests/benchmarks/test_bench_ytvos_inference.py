"""inference_ytvos.py: masks and submission zip in the upload layout, resume, chunked query selection, workers."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inference_ytvos
from tests.benchmarks.bench_fixtures import checkpoint_of_method
from tests.datasets.ytvos_fixture import write_ytvos_fixture
from util.inference import chunk_slices, contiguous_shards, frame_queries, run_workers

EXPECTED = {f"Annotations/vid_c/{e}/{t:05d}.png" for e in ("0", "1") for t in range(4)} | \
    {f"Annotations/vid_d/0/{t:05d}.png" for t in range(2)}


def test_chunks_and_query_selection() -> None:
    assert chunk_slices(5, 0) == [slice(0, 5)] and chunk_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    logits = torch.full((4, 3, 1), -5.0)
    logits[:2, 1] = 5.0   # slot 1 dominates the first chunk
    logits[2:, 2] = 4.0   # slot 2 the second, with a smaller margin
    chunks = chunk_slices(4, 2)
    assert frame_queries(logits, chunks, per_chunk=True).tolist() == [1, 1, 2, 2]
    assert frame_queries(logits, chunks, per_chunk=False).tolist() == [1, 1, 1, 1]
    assert contiguous_shards(list(range(5)), 2) == [[0, 1], [2, 3, 4]]


def test_inference_writes_the_upload_zip_and_resumes(tmp_path: Path, tiny_session_flags: list[str],
                                                     tiny_checkpoint: Path) -> None:
    root = write_ytvos_fixture(tmp_path / "ref-ytvos")
    out = tmp_path / "out"
    argv = tiny_session_flags + ["--ytvos_path", str(root), "--output_dir", str(out), "--resume", str(tiny_checkpoint),
                                 "--clip_len", "3", "--visualize"]
    assert inference_ytvos.main(argv) == 0
    with zipfile.ZipFile(out / "submission.zip") as archive:
        names = set(archive.namelist())
        assert names == EXPECTED  # Annotations/ at the root, test-only video vid_e dropped
        with archive.open("Annotations/vid_c/1/00002.png") as handle:
            png = Image.open(handle)
            png.load()
    assert png.mode == "L" and png.size == (48, 32)  # original frame size (W, H)
    assert set(np.unique(np.asarray(png))) <= {0, 255}
    assert (out / "visualize" / "vid_c" / "0" / "00000.jpg").is_file()

    kept = out / "Annotations" / "vid_c" / "0" / "00000.png"
    stamp = kept.stat().st_mtime_ns
    redo = out / "Annotations" / "vid_d" / "0"
    for png_file in redo.iterdir():
        png_file.unlink()
    redo.rmdir()
    assert inference_ytvos.main(argv) == 0
    assert kept.stat().st_mtime_ns == stamp  # finished expressions are skipped
    assert (redo / "00001.png").is_file()     # the missing one is computed again
    assert not list(out.glob(".*tmp*")) and not list((out / "Annotations" / "vid_d").glob(".*"))


def test_inference_refuses_a_checkpoint_of_another_method(tmp_path: Path, tiny_session_flags: list[str],
                                                         tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    other = checkpoint_of_method(tiny_checkpoint, tmp_path / "other.pth", "some_other_method")
    root = write_ytvos_fixture(tmp_path / "ref-ytvos")
    rc = inference_ytvos.main(tiny_session_flags + ["--ytvos_path", str(root), "--output_dir", str(tmp_path / "o"),
                                                    "--resume", str(other)])
    assert rc == 1 and "--method some_other_method" in capsys.readouterr().err


def _record_items(worker: int, device: torch.device, shard: list, folder: Path, progress) -> None:
    """Worker used below: one file per item; item 'boom' fails."""
    for item in shard:
        if item == "boom":
            raise ValueError("worker failure on purpose")
        (folder / f"{item}.txt").write_text(str(worker))
        progress(1)


def test_worker_processes_cover_each_item_once_and_report_failures(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"worker\(s\) \[1\] failed"):
        run_workers(_record_items, ["a", "b", "c", "boom"], [cpu, cpu], tmp_path, desc="test")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "0", "b.txt": "0", "c.txt": "1"}
