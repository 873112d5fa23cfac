"""Logging set-up: console on rank 0 (warnings elsewhere), a log file and a JSON-lines metrics log."""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted: test runners swap (and close) it between runs."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(output_dir: Optional[str], rank: int = 0, level: int = logging.INFO) -> None:
    """Root logger: INFO to stderr on rank 0 (WARNING on other ranks), plus output_dir/train.log on rank 0."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level if rank == 0 else logging.WARNING)
    fmt = logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = CurrentStderrHandler()
    console.setFormatter(fmt)
    root.addHandler(console)
    if output_dir and rank == 0:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(output_dir) / "train.log")
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record per line (log.txt, as upstream)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file next to ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
