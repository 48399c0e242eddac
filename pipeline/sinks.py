"""Where events and per-step scores go: stdout, JSON-lines files, a ZeroMQ PUB socket."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

import zmq

from pipeline.events import ActionEvent
from pipeline.scores import ScoresWriter, StepScores


class EventSinks:
    """Fans every event out to the configured sinks; owns the files and socket it opens."""

    def __init__(
        self,
        stdout: TextIO | None = sys.stdout,
        jsonl_path: Path | None = None,
        pub_endpoint: str | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self._stdout = stdout
        self._file = jsonl_path.open("w", encoding="utf-8") if jsonl_path else None
        self._pub = None
        if pub_endpoint:
            self._pub = (context or zmq.Context.instance()).socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 1000)
            self._pub.bind(pub_endpoint)

    def emit(self, event: ActionEvent) -> None:
        record = event.to_json()
        line = json.dumps(record, separators=(",", ":"))
        if self._stdout is not None:
            marker = "▶" if event.kind == "start" else "■"
            self._stdout.write(
                f"{marker} {event.stream:<16} {event.action:<11} {event.kind:<5} t={event.t:7.2f}s "
                f"confidence={event.confidence:.2f}\n"
            )
            self._stdout.flush()
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        if self._pub is not None:
            # Topic frame = stream name, so subscribers can filter per stream.
            self._pub.send_multipart([event.stream.encode(), line.encode()])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._pub is not None:
            self._pub.close()


class ScoreSink:
    def __init__(self, path: Path | None) -> None:
        self._writer = ScoresWriter(path) if path else None

    def write(self, step: StepScores) -> None:
        if self._writer is not None:
            self._writer.write(step)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
