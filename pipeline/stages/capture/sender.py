"""The capture process's one sender: owns the PUSH socket to the embed workers and sends from every
stream's outbox in turn, so a slow or blocked stream never holds up another.

Sequence numbers and START/END flags are given when a frame is actually
sent, so frames dropped on the way leave no gap for the temporal stage to
wait on. A live frame that could only be sent after its stream's
``stale_after_s`` is dropped (``stale``) instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import zmq

from pipeline.stages.capture.outbox import OutFrame, StreamOutbox
from pipeline.transport.messages import Flags, FrameHeader, encode_frame

logger = logging.getLogger(__name__)


class FrameSender(threading.Thread):
    """Owns the PUSH socket; sends from every outbox in turn without blocking on any one."""

    def __init__(self, socket: zmq.Socket, stage: str, metrics=None, wall_clock: Callable[[], float] = time.time,
                 preview_socket: zmq.Socket | None = None) -> None:
        super().__init__(name=f"{stage}-sender", daemon=True)
        self._socket = socket
        self._preview_socket = preview_socket
        self._metrics = metrics
        self._wall = wall_clock
        self._outboxes: dict[str, StreamOutbox] = {}
        self._registry_lock = threading.Lock()
        self.wake = threading.Event()
        self._stop_when_empty = threading.Event()
        self.error: BaseException | None = None
        self._turn = 0  # who goes first rotates, so no stream owns the free slots

    def attach(self, outbox: StreamOutbox) -> None:
        with self._registry_lock:
            self._outboxes[outbox.stream] = outbox
        self.wake.set()

    def finish(self) -> None:
        """Exit once every outbox is empty."""
        self._stop_when_empty.set()
        self.wake.set()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # handed to the stage's main loop, which fails the stage
            self.error = exc
            logger.exception("capture sender failed")

    def _loop(self) -> None:
        while True:
            with self._registry_lock:
                outboxes = list(self._outboxes.values())
                for name in [o.stream for o in outboxes if o.finished]:
                    del self._outboxes[name]
            if outboxes:
                self._turn = (self._turn + 1) % len(outboxes)
                outboxes = outboxes[self._turn:] + outboxes[:self._turn]
            sent = blocked = 0
            for outbox in outboxes:
                result = self._send_one(outbox)
                sent += result == "sent"
                blocked += result == "blocked"
            if sent:
                continue
            if self._stop_when_empty.is_set() and all(o.empty for o in outboxes):
                return
            if blocked:
                self._socket.poll(50, zmq.POLLOUT)
            else:
                self.wake.wait(0.05)
                self.wake.clear()

    def _send_one(self, outbox: StreamOutbox) -> str:
        with outbox.lock:
            item = outbox.head()
            if item is None:
                return "idle"
            if isinstance(item, OutFrame):
                if outbox.live and self._wall() - item.capture_wall > outbox.stale_after_s:
                    outbox.pop()
                    outbox.counters.dropped_frames("stale")
                    return "sent"
                flags, reason = Flags.NONE, ""
                if item.sequence != outbox.open_sequence:
                    flags, reason = Flags.START, item.start_reason
                header = FrameHeader(
                    stream=outbox.stream, seq=outbox.seq, t=item.t, capture_wall=item.capture_wall,
                    height=item.pixels.shape[0], width=item.pixels.shape[1], flags=int(flags),
                    generation=outbox.generation, reason=reason, live=outbox.live,
                )
                parts = encode_frame(header, item.pixels)
            else:
                if item.sequence != outbox.open_sequence and not item.final:
                    outbox.pop()  # nothing of that sequence was sent: nothing to end
                    return "sent"
                header = FrameHeader(
                    stream=outbox.stream, seq=outbox.seq, t=item.t, capture_wall=self._wall(), height=0, width=0,
                    flags=int(Flags.END), generation=outbox.generation, reason=item.reason, live=outbox.live,
                )
                parts = encode_frame(header, None)
            try:
                # copy=False: parts over the socket's copy_threshold go out in place (transport/sockets.py).
                self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return "blocked"
            outbox.pop()
            outbox.seq += 1
            if isinstance(item, OutFrame):
                outbox.open_sequence = item.sequence
                outbox.counters.sent_frame(item.t)
                if item.preview is not None and self._preview_socket is not None:
                    self._send_preview(header, item.preview)
                if self._metrics:
                    self._metrics.stage_latency.labels("capture").observe(max(0.0, self._wall() - item.capture_wall))
            else:
                outbox.open_sequence = None
            return "sent"

    def _send_preview(self, header: FrameHeader, preview: np.ndarray) -> None:
        """Never waits: a preview the overlay stage cannot take now is let go (its step is counted there)."""
        header = replace(header, height=preview.shape[0], width=preview.shape[1])
        try:
            self._preview_socket.send_multipart(encode_frame(header, preview), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return  # let go: the overlay counts its step as unmatched

