"""Capture stage: one process per source. Decode, sample by timestamp to the
model's step rate, resize to the model input, and PUSH frames to the embed
workers.

Replay (files, image folders) never drops: a full downstream blocks the send,
so a replay is lossless and repeatable. Live sources (cameras, network
streams) are read by a thread into a small buffer that drops the *oldest*
frame when full (counted as ``backpressure``), so latency stays bounded.

The first frame of a sequence carries START. Frames leave as soon as they
are ready; the sequence ends with an END-only marker (no pixels) in the same
ordered channel, because holding a frame back to learn whether it is the last
would add a whole step period to every frame's latency.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import zmq

from pipeline.messages import Flags, FrameHeader, encode_frame
from pipeline.sampling import StepSampler
from pipeline.sources import FrameReader, RawFrame, SourceError, open_source
from pipeline.video_io import prepare_frame


@dataclass(frozen=True)
class CaptureSettings:
    stream: str
    uri: str
    live: bool
    realtime: bool
    loop: bool
    step_rate: float
    width: int
    height: int
    embed_endpoints: tuple[str, ...]
    high_water_mark: int
    live_buffer: int = 2


@dataclass
class CaptureTally:
    captured: int = 0
    sent: int = 0
    dropped_sampling: int = 0
    dropped_backpressure: int = 0


class ReplayPacer:
    """Releases frames of stream time ``t`` no earlier than ``start + t`` on the wall clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start: float | None = None

    def delay(self, t: float) -> float:
        now = self._clock()
        if self._start is None:
            self._start = now - t
        return max(0.0, self._start + t - now)


class LatestFrames:
    """Bounded buffer between a live reader thread and the sender: drops the oldest."""

    def __init__(self, capacity: int) -> None:
        self._frames: deque[RawFrame] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, frame: RawFrame) -> None:
        with self._cond:
            if len(self._frames) >= self._capacity:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self, timeout: float) -> RawFrame | None | bool:
        """A frame; None when closed and empty; False on timeout."""
        with self._cond:
            if not self._frames and not self._closed:
                self._cond.wait(timeout)
            if self._frames:
                return self._frames.popleft()
            return None if self._closed else False


def _live_frames(reader: FrameReader, stop: threading.Event, buffer: LatestFrames, errors: list) -> None:
    try:
        while not stop.is_set():
            frame = reader.read()
            if frame is None:
                break
            buffer.put(frame)
    except Exception as exc:  # handed to the sender thread, which raises it
        errors.append(exc)
    finally:
        buffer.close()


class CaptureWorker:
    def __init__(
        self,
        settings: CaptureSettings,
        socket: zmq.Socket,
        stop: threading.Event | object,
        metrics=None,
        opener: Callable[[str], FrameReader] = open_source,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.s = settings
        self._socket = socket
        self._stop = stop
        self._metrics = metrics
        self._opener = opener
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self.tally = CaptureTally()
        self._seq = 0

    # -- frames in ---------------------------------------------------------------
    def _replay_frames(self, reader: FrameReader) -> Iterator[RawFrame]:
        pacer = ReplayPacer(self._clock)
        while not self._stop.is_set():
            frame = reader.read()
            if frame is None:
                return
            if self.s.realtime:
                delay = pacer.delay(frame.t)
                if delay > 0:
                    self._sleep(delay)
            yield frame

    def _live_frames(self, reader: FrameReader) -> Iterator[RawFrame]:
        buffer = LatestFrames(self.s.live_buffer)
        errors: list[BaseException] = []
        local_stop = threading.Event()
        thread = threading.Thread(target=_live_frames, args=(reader, local_stop, buffer, errors), daemon=True)
        thread.start()
        try:
            while not self._stop.is_set():
                item = buffer.get(timeout=0.2)
                if item is None:
                    break
                if item is False:
                    continue
                yield item
        finally:
            local_stop.set()
            thread.join(timeout=2.0)
            # Frames the buffer dropped were read from the source: captured, then dropped.
            self.tally.captured += buffer.dropped
            self.tally.dropped_backpressure += buffer.dropped
            if self._metrics and buffer.dropped:
                self._metrics.frames_captured.labels(self.s.stream).inc(buffer.dropped)
                self._metrics.frames_dropped.labels(self.s.stream, "backpressure").inc(buffer.dropped)
        if errors:
            raise SourceError(f"stream {self.s.stream}: reading failed: {errors[0]}") from errors[0]

    # -- frames out --------------------------------------------------------------
    def _send(self, header: FrameHeader, pixels: np.ndarray | None) -> None:
        # copy=False: pyzmq sends the pixel buffer in place and still copies parts
        # under zmq.COPY_THRESHOLD (64 KB), such as the header.
        self._socket.send_multipart(encode_frame(header, pixels), copy=False)
        self.tally.sent += 1
        if self._metrics:
            self._metrics.frames_sent.labels(self.s.stream).inc()
            self._metrics.stage_latency.labels("capture").observe(max(0.0, self._wall() - header.capture_wall))

    def run(self) -> CaptureTally:
        t_offset = 0.0
        while True:
            reader = self._opener(self.s.uri)
            try:
                last_t = self._run_sequence(reader, t_offset)
            finally:
                reader.close()
            if not (self.s.loop and not self.s.live) or self._stop.is_set() or last_t is None:
                return self.tally
            # The next pass continues stream time, so outputs stay ordered by t.
            t_offset = last_t + 1.0 / self.s.step_rate

    def _run_sequence(self, reader: FrameReader, t_offset: float) -> float | None:
        sampler = StepSampler(self.s.step_rate)
        frames = self._live_frames(reader) if reader.is_live else self._replay_frames(reader)
        flags = Flags.START
        last_t = None
        for frame in frames:
            self.tally.captured += 1
            if self._metrics:
                self._metrics.frames_captured.labels(self.s.stream).inc()
            if not sampler.accept(frame.t):
                self.tally.dropped_sampling += 1
                if self._metrics:
                    self._metrics.frames_dropped.labels(self.s.stream, "sampling").inc()
                continue
            wall = self._wall()
            pixels = prepare_frame(frame.image, self.s.width, self.s.height)
            header = FrameHeader(
                stream=self.s.stream, seq=self._seq, t=frame.t + t_offset, capture_wall=wall,
                height=self.s.height, width=self.s.width, flags=int(flags),
            )
            self._seq += 1
            flags = Flags.NONE
            self._send(header, pixels)
            last_t = header.t
        if last_t is not None:
            self._send_end(last_t)
        return last_t

    def _send_end(self, t: float) -> None:
        header = FrameHeader(stream=self.s.stream, seq=self._seq, t=t, capture_wall=self._wall(), height=0, width=0,
                             flags=int(Flags.END))
        self._seq += 1
        self._socket.send_multipart(encode_frame(header, None))
