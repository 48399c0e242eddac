"""The run's private folder: the stages' ipc sockets, the metrics every process writes, the live page's board.

A fresh temporary folder per run (under ``transport.ipc_dir`` when set), so
two runs on one machine never share a socket. Removed when the run ends; if
the supervisor itself is killed, the last stage process out removes it
(:mod:`pipeline.stages.bootstrap`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


class RunFolder:
    def __init__(self, parent: Path | None = None) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="actionpipe-", dir=str(parent) if parent is not None else None))
        self.metrics = self.path / "metrics"  # prometheus_client's multiprocess files, one set per process
        self.live = self.path / "live"  # the overlay's board, read by the live page
        self.metrics.mkdir()
        self.live.mkdir()

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.path}/{name}"

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()
