"""The coordinator's journal of its streams, in the shared state folder: what no node can tell a restarted
coordinator.

A restarted coordinator rebuilds its table from what the live agents run; a stream whose node died
while the coordinator was down (or with it) is reported by nobody. The journal (one JSON file, replaced
atomically whenever the table changes) names every stream the coordinator was responsible for, with
its source, needs, node, generation and what its node last reported (open actions, last step): the new
coordinator resumes those the agents do not report as after a failover. It holds sources, which may
carry credentials: the file is readable by its owner only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FILE_NAME = "cluster-streams.json"


class StreamJournal:
    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / FILE_NAME
        self._last: dict[str, Any] | None = None

    def load(self) -> dict[str, dict]:
        """The streams journaled by the last coordinator ({} when there is no journal, or it is unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.error("coordinator: the stream journal %s cannot be read (%s); streams of nodes lost meanwhile "
                         "are not resumed", self.path, exc)
            return {}
        streams = data.get("streams") if isinstance(data, dict) else None
        return {k: v for k, v in streams.items() if isinstance(v, dict)} if isinstance(streams, dict) else {}

    def save(self, streams: dict[str, dict]) -> None:
        """Replace the journal with ``streams`` (nothing is written when they did not change)."""
        if streams == self._last:
            return
        temp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"streams": streams}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            logger.warning("coordinator: the stream journal %s cannot be written: %s", self.path, exc)
            return
        self._last = streams
