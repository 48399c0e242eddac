"""Where events and per-step scores go: stdout, JSON-lines files, a ZeroMQ PUB socket.

Every sink implements the same two methods (``emit`` / ``close``) and is
composed by :class:`SinkFanOut`, which isolates failures: a sink that raises
(a full disk, a closed pipe) is counted (``actionpipe_sink_errors_total``)
and logged when it starts failing and when it recovers, and neither scoring
nor the other sinks notice. A new sink is one class here and one line where
the temporal stage builds its sinks.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TextIO

import zmq

from pipeline.events import ActionEvent
from pipeline.outputs.files import LineAppender
from pipeline.scores import StepScores

logger = logging.getLogger(__name__)
REMIND_EVERY_S = 60.0


class Sink(Protocol):
    name: str

    def emit(self, record) -> None: ...

    def close(self) -> None: ...


class StdoutEventSink:
    name = "stdout"

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out

    def emit(self, event: ActionEvent) -> None:
        marker = "▶" if event.kind == "start" else "■"
        self._out.write(
            f"{marker} {event.stream:<16} {event.action:<11} {event.kind:<5} t={event.t:7.2f}s "
            f"confidence={event.confidence:.2f}" + (f" ({event.reason})" if event.reason != "threshold" else "") + "\n"
        )
        self._out.flush()

    def close(self) -> None:
        return None


class JsonlEventSink:
    name = "events_jsonl"

    def __init__(self, path: Path) -> None:
        self._file = LineAppender(path)

    def emit(self, event: ActionEvent) -> None:
        self._file.write_line(json.dumps(event.to_json(), separators=(",", ":")))

    def close(self) -> None:
        self._file.close()


class PubEventSink:
    """Events on a ZeroMQ PUB socket; topic frame = stream name, so subscribers can filter per stream."""

    name = "events_pub"

    def __init__(self, endpoint: str, context: zmq.Context) -> None:
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.bind(endpoint)

    def emit(self, event: ActionEvent) -> None:
        # PUB never blocks: a slow subscriber loses messages, not the pipeline.
        self._socket.send_multipart([event.stream.encode(), json.dumps(event.to_json(), separators=(",", ":")).encode()])

    def close(self) -> None:
        self._socket.close()


class JsonlScoreSink:
    """Per-step scores, one line per step, in the format ``tools.evaluate`` reads."""

    name = "scores_jsonl"

    def __init__(self, path: Path) -> None:
        self._file = LineAppender(path)

    def emit(self, step: StepScores) -> None:
        self._file.write_line(step.to_json())

    def close(self) -> None:
        self._file.close()


class _Health:
    def __init__(self) -> None:
        self.failing = False
        self.lost = 0
        self.reminded_at = 0.0


class SinkFanOut:
    """Hands every record to every sink; a failing sink costs only its own records (counted)."""

    def __init__(self, sinks: Sequence[Sink], metrics=None, clock: Callable[[], float] = time.monotonic) -> None:
        self.sinks = list(sinks)
        self._metrics = metrics
        self._clock = clock
        self._health = {id(sink): _Health() for sink in self.sinks}
        if metrics is not None:
            for sink in self.sinks:  # every output's error count exists from the start (0)
                metrics.sink_errors.labels(sink.name)

    def emit(self, record) -> None:
        for sink in self.sinks:
            health = self._health[id(sink)]
            try:
                sink.emit(record)
            except Exception as exc:  # isolated by design: counted and logged, scoring goes on
                self._failed(sink, health, exc)
            else:
                if health.failing:
                    logger.info("output %s works again (%d record(s) were lost while it failed)", sink.name, health.lost)
                    health.failing, health.lost = False, 0

    def _failed(self, sink: Sink, health: _Health, exc: Exception) -> None:
        health.lost += 1
        if self._metrics:
            self._metrics.sink_errors.labels(sink.name).inc()
        now = self._clock()
        if not health.failing:
            health.failing, health.reminded_at = True, now
            logger.error("output %s failed: %s; scoring goes on, its records are counted as lost until it recovers",
                         sink.name, exc)
        elif now - health.reminded_at >= REMIND_EVERY_S:
            health.reminded_at = now
            logger.error("output %s still failing (%s): %d record(s) lost so far", sink.name, exc, health.lost)

    @property
    def failing(self) -> list[str]:
        return [sink.name for sink in self.sinks if self._health[id(sink)].failing]

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing one output must not keep the others open
                logger.error("output %s did not close cleanly: %s", sink.name, exc)
