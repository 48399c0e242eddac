"""What the overlay stage receives, and the two senders that never wait for it.

Three message kinds arrive on the overlay stage's one PULL socket:

* preview frames from the capture workers: the ordinary frame message
  (``pipeline.transport.messages.encode_frame``), BGR pixels at the overlay's size;
* ``[b"overlay-step", json]`` from the temporal worker: a scored step
  ``{"stream", "t", "probs": [...]}`` in the model's class order;
* ``[b"overlay-event", json]`` from the temporal worker: an action event as
  the events JSONL carries it.

Both senders send without blocking: when the overlay stage is behind (its
socket's queue is full) or down, what cannot go now is counted as
``actionpipe_overlay_dropped_total{reason="backpressure"}`` and scoring goes
on at its own pace. An event the overlay misses only leaves the live page's
list short; the event outputs still have it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import zmq

from pipeline.errors import ActionPipeError
from pipeline.events import ActionEvent
from pipeline.scores import StepScores

STEP_KIND = b"overlay-step"
EVENT_KIND = b"overlay-event"


class OverlayMessageError(ActionPipeError, ValueError):
    """A message on the overlay's socket that is not a preview frame, a scored step or an event."""

    restart_helps = True


def encode_step(stream: str, t: float, probs: Sequence[float]) -> list[bytes]:
    return [STEP_KIND, json.dumps({"stream": stream, "t": t, "probs": [round(float(p), 5) for p in probs]},
                                  separators=(",", ":")).encode()]


def encode_event(event: ActionEvent) -> list[bytes]:
    return [EVENT_KIND, json.dumps(event.to_json(), separators=(",", ":")).encode()]


def decode_json_part(parts: Sequence) -> dict:
    try:
        body = json.loads(bytes(parts[1]))
    except (IndexError, ValueError) as exc:
        raise OverlayMessageError(f"overlay message without a JSON body: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("stream"), str):
        raise OverlayMessageError("overlay message without a stream name")
    return body


class OverlayFeedSink:
    """The temporal worker's side: scored steps and events to the overlay stage (a sink like the others)."""

    name = "overlay"

    def __init__(self, socket: zmq.Socket, classes: Sequence[str], metrics=None) -> None:
        self._socket = socket
        self._classes = tuple(classes)
        self._metrics = metrics

    def emit(self, record) -> None:
        if isinstance(record, StepScores):
            parts = encode_step(record.stream, record.t, [record.scores[c] for c in self._classes])
        elif isinstance(record, ActionEvent):
            parts = encode_event(record)
        else:
            raise TypeError(f"the overlay takes scored steps and events, not {type(record).__name__}")
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            if self._metrics is not None and isinstance(record, StepScores):
                self._metrics.overlay_dropped.labels(record.stream, "backpressure").inc()

    def close(self) -> None:
        self._socket.close()  # with the socket's own (bounded) linger
