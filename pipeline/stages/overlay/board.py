"""What the live page shows of each stream, kept by the overlay stage: the
actions active now (from the start/end events), the last events, the latest
probabilities and the latest annotated frame.

The overlay stage publishes the board into a folder of the run directory:
``state.json`` and one ``<key>.jpg`` per stream, each replaced atomically
(write, then rename), so the supervisor's HTTP threads can serve the newest
without asking the stage anything and never read half a file. Publishing
is throttled (``min_interval_s``): a page refreshing once a second needs no
more, and JPEG encoding is the costly part.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

EVENTS_KEPT = 8


def frame_key(stream: str) -> str:
    """A file name for a stream's frame; stream names are free text, file names are not."""
    return stream.encode().hex()


@dataclass
class _StreamBoard:
    active: dict[str, float] = field(default_factory=dict)  # action -> confidence at its start
    events: deque = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    t: float | None = None
    probs: dict[str, float] = field(default_factory=dict)
    rendered: int = 0
    unmatched: int = 0
    frame: np.ndarray | None = None  # the latest annotated canvas, not yet published
    frame_version: int = 0
    published_at: float = float("-inf")


class LiveBoard:
    def __init__(self, classes: Sequence[str], min_interval_s: float = 0.5, jpeg_quality: int = 80,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._classes = tuple(classes)
        self._min_interval_s = min_interval_s
        self._jpeg_quality = jpeg_quality
        self._clock = clock
        self._streams: dict[str, _StreamBoard] = {}
        self._state_published_at = float("-inf")
        self._changed = False

    def _board(self, stream: str) -> _StreamBoard:
        board = self._streams.get(stream)
        if board is None:
            board = self._streams[stream] = _StreamBoard()
        return board

    def active(self, stream: str) -> Mapping[str, float]:
        board = self._streams.get(stream)
        return dict(board.active) if board else {}

    def event(self, event: Mapping) -> None:
        board = self._board(event["stream"])
        if event["kind"] == "start":
            board.active[event["action"]] = float(event["confidence"])
        else:
            board.active.pop(event["action"], None)
        board.events.appendleft({k: event[k] for k in ("action", "kind", "t", "confidence", "wall_time", "reason")})
        self._changed = True

    def step(self, stream: str, t: float, probs: Sequence[float], canvas: np.ndarray | None) -> None:
        board = self._board(stream)
        board.t = t
        board.probs = {name: round(float(p), 4) for name, p in zip(self._classes, probs)}
        board.rendered += 1
        if canvas is not None:
            board.frame = canvas
        self._changed = True

    def lost(self, stream: str, count: int) -> None:
        self._board(stream).unmatched += count
        self._changed = True

    def snapshot(self) -> dict:
        return {
            "classes": list(self._classes),
            "streams": {
                name: {"active": dict(b.active), "events": list(b.events), "t": b.t, "probs": dict(b.probs),
                       "rendered": b.rendered, "unmatched": b.unmatched,
                       "frame": f"{frame_key(name)}.jpg" if b.frame_version else None, "frame_version": b.frame_version}
                for name, b in self._streams.items()
            },
        }

    def wants_frame(self, stream: str) -> bool:
        """Whether a canvas for ``stream`` would be published now (else the caller need not keep it)."""
        board = self._streams.get(stream)
        return board is None or self._clock() - board.published_at >= self._min_interval_s

    def publish(self, folder: Path, force: bool = False) -> None:
        now = self._clock()
        for name, board in self._streams.items():
            if board.frame is not None and (force or now - board.published_at >= self._min_interval_s):
                ok, jpeg = cv2.imencode(".jpg", board.frame, [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality])
                if ok:
                    _replace(folder / f"{frame_key(name)}.jpg", jpeg.tobytes())
                    board.frame_version += 1
                    self._changed = True
                board.frame, board.published_at = None, now
        if self._changed and (force or now - self._state_published_at >= self._min_interval_s):
            _replace(folder / "state.json", json.dumps(self.snapshot(), separators=(",", ":")).encode())
            self._state_published_at, self._changed = now, False


def _replace(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)
