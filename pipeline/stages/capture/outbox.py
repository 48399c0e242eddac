"""What travels from a stream's thread to the capture sender, and the per-stream queue between them.

A stream's reader thread puts frames (and END markers) into its
:class:`StreamOutbox`; the one sender thread takes them out. The outbox
holds the stream's drop policy:

* replay (files, image folders): the outbox blocks its reader when full, so
  nothing is dropped and a replay is lossless and repeatable;
* live (cameras, network streams): the outbox drops its oldest frame when
  full (``backpressure``), so the reader keeps up with the source and
  latency stays bounded.

Frame accounting: a frame is counted as captured when its fate is decided
(sent, or dropped with a reason), so every captured frame is either sent or
dropped, per stream, at every moment (:class:`StreamCounters`).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from pipeline.transport.messages import FINAL_END_REASONS


@dataclass(frozen=True, eq=False)
class OutFrame:
    sequence: int  # the runner's sequence counter: a new value starts a new sequence
    start_reason: str
    t: float
    capture_wall: float
    pixels: np.ndarray
    preview: np.ndarray | None = None  # BGR, for the overlay stage


@dataclass(frozen=True)
class EndOfSequence:
    sequence: int
    reason: str
    t: float

    @property
    def final(self) -> bool:
        return self.reason in FINAL_END_REASONS


class StreamCounters:
    """A stream's frame fates in this process; written by its runner and the sender."""

    def __init__(self, stream: str, metrics) -> None:
        self.stream = stream
        self._metrics = metrics
        self._lock = threading.Lock()
        self.captured = 0
        self.sent = 0
        self.dropped: dict[str, int] = {}
        self.last_sent_t: float | None = None

    def dropped_frames(self, reason: str, count: int = 1) -> None:
        if count <= 0:
            return
        with self._lock:
            self.captured += count
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        if self._metrics:
            self._metrics.frames_captured.labels(self.stream).inc(count)
            self._metrics.frames_dropped.labels(self.stream, reason).inc(count)

    def sent_frame(self, t: float) -> None:
        with self._lock:
            self.captured += 1
            self.sent += 1
            self.last_sent_t = t
        if self._metrics:
            self._metrics.frames_captured.labels(self.stream).inc()
            self._metrics.frames_sent.labels(self.stream).inc()


class StreamOutbox:
    """A stream's frames on their way to the sender: blocking for replays, drop-oldest for live streams.

    END markers never count against the capacity and are never dropped. The
    sender's per-stream numbering lives here too (``seq``, the open sequence).
    """

    def __init__(self, stream: str, generation: int, live: bool, capacity: int, stale_after_s: float,
                 counters: StreamCounters, wake: threading.Event) -> None:
        self.stream = stream
        self.generation = generation
        self.live = live
        self.capacity = capacity
        self.stale_after_s = stale_after_s
        self.counters = counters
        self.lock = threading.Lock()
        self._not_full = threading.Condition(self.lock)
        self._items: deque[OutFrame | EndOfSequence] = deque()
        self._frames = 0
        self._wake = wake
        self.closed = False  # the final END is queued: nothing more goes in
        # The sender's numbering for this stream.
        self.seq = 0
        self.open_sequence: int | None = None

    def put_frame(self, frame: OutFrame, stop: threading.Event) -> bool:
        """False when the outbox is closed or ``stop`` is set before there was room (replay)."""
        with self.lock:
            if self.closed:
                return False
            if self.live:
                if self._frames >= self.capacity:
                    self._drop_oldest_frame()
            else:
                while self._frames >= self.capacity and not self.closed:
                    if stop.is_set():
                        return False
                    self._not_full.wait(0.1)
                if self.closed:
                    return False
            self._items.append(frame)
            self._frames += 1
        self._wake.set()
        return True

    def put_end(self, end: EndOfSequence) -> None:
        with self.lock:
            if self.closed:
                return
            self._items.append(end)
            if end.final:
                self.closed = True
                self._not_full.notify_all()
        self._wake.set()

    def discard(self) -> None:
        """Let go of everything queued and take nothing more: the sender forgets this outbox."""
        with self.lock:
            self._items.clear()
            self._frames = 0
            self.closed = True
            self._not_full.notify_all()
        self._wake.set()

    def _drop_oldest_frame(self) -> None:
        for i, item in enumerate(self._items):
            if isinstance(item, OutFrame):
                del self._items[i]
                self._frames -= 1
                self.counters.dropped_frames("backpressure")
                return

    # The sender calls these with ``lock`` held.
    def head(self) -> OutFrame | EndOfSequence | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        item = self._items.popleft()
        if isinstance(item, OutFrame):
            self._frames -= 1
            self._not_full.notify()

    @property
    def empty(self) -> bool:
        return not self._items

    @property
    def finished(self) -> bool:
        """The final END has been sent."""
        return self.closed and not self._items

