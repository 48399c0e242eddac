"""Capture stage: one process serves many streams.

Each stream is a thread (:class:`StreamRunner`) that owns the stream's
state machine and its reader: it opens the source, decodes (OpenCV releases
the GIL), samples by timestamp to the model's step rate, resizes to the
model input, and puts frames into the stream's :class:`StreamOutbox`. One
sender thread (:class:`FrameSender`) owns the ZeroMQ socket and sends from
every outbox in turn, so a slow or blocked stream never holds up another.

Drop policy, per stream:

* replay (files, image folders): the outbox blocks its reader when full, so
  nothing is dropped and a replay is lossless and repeatable;
* live (cameras, network streams): the outbox drops its oldest frame when
  full (``backpressure``), so the reader keeps up with the source and
  latency stays bounded; a live frame that could only be sent after
  ``stale_after_s`` is dropped too (``stale``).

Sequence numbers and START/END flags are given when a frame is actually
sent, so frames dropped on the way leave no gap for the temporal stage to
wait on. A sequence starts (START) at every open, reconnect, loop pass or
capture restart, and ends with an END-only marker carrying its reason.

Frame accounting: a frame is counted as captured when its fate is decided
(sent, or dropped with a reason), so every captured frame is either sent or
dropped, per stream, at every moment.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np
import zmq

from pipeline.backoff import Backoff
from pipeline.transport.control import (
    AddStream,
    Heartbeat,
    ParentWatch,
    RemoveStream,
    StageLink,
    StopReading,
    StreamChanged,
)
from pipeline.transport.messages import Flags, FrameHeader, encode_frame
from pipeline.stages.overlay.drawing import preview_size
from pipeline.sources.sampling import StepSampler
from pipeline.sources.readers import FrameReader, SourceOpenError, open_source
from pipeline.sources.lifecycle import Action, ReconnectPolicy, StreamState, StreamStateMachine, Transition
from pipeline.sources.uri import SourceKind, classify
from pipeline.sources.decoding import prepare_frame

logger = logging.getLogger(__name__)

FINAL_END_REASONS = frozenset({"end_of_stream", "removed", "stopped", "failed"})
HEARTBEAT_S = 0.5
SLOW_SOURCE_FRAMES = 20  # frames seen before judging a live source's rate
# A stream asked to stop gets this long to finish its read before the stage ends it without the thread.
STOP_GRACE_S = 0.5


@dataclass(frozen=True)
class CaptureSettings:
    stage: str
    control_endpoint: str
    embed_endpoints: tuple[str, ...]
    high_water_mark: int
    width: int
    height: int
    step_rate: float
    parent_pid: int
    decoder_threads: int = 1  # FFmpeg threads per stream (0: FFmpeg's choice); the supervisor decides
    decoder: str = "opencv"  # or "nvdec"
    gpu: int = 0
    # The overlay stage (if any): a preview of every frame sent to the model goes there, this wide.
    preview_endpoint: str = ""
    preview_width: int = 0


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


# -- what travels from a stream's thread to the sender ---------------------------
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
                # copy=False: the pixel buffer goes out in place (parts under 64 KB are copied anyway).
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
            pass


class StreamRunner(threading.Thread):
    """One stream: its state machine, its reader, its sampling; frames into its outbox."""

    def __init__(
        self,
        spec: AddStream,
        settings: CaptureSettings,
        outbox: StreamOutbox,
        report: Callable[[object], None],
        metrics=None,
        opener: Callable[..., FrameReader] = open_source,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name=f"stream-{spec.stream}", daemon=True)
        self.spec = spec
        self.s = settings
        self.outbox = outbox
        self.counters = outbox.counters
        self._report = report
        self._metrics = metrics
        if metrics is not None and spec.live:
            # A live stream's reconnect count exists from the start (0), so dashboards and alerts see it.
            metrics.reconnects.labels(spec.stream)
        self._opener = opener
        self._clock = clock
        self._wall = wall_clock
        self._stop_event = threading.Event()
        self._stop_reason = "stopped"
        self._source = classify(spec.uri)
        backoff = Backoff(**{k: spec.reconnect[k] for k in ("initial_s", "max_s", "multiplier", "jitter")})
        policy = ReconnectPolicy(backoff, spec.reconnect.get("max_attempts"), spec.stale_after_s)
        self.machine = StreamStateMachine(spec.stream, spec.live, policy, rng or random.Random(), clock())
        # Live stream time counts from here, across reconnects (and across a restart of this process).
        self._origin = clock() - (spec.start_t or 0.0)
        self._sequence = 0
        self._next_start_reason = spec.start_reason
        self._t_offset = 0.0
        self._resume_after_t = spec.resume_after_t
        self._last_t: float | None = None
        self._last_logged_error = ""
        self._finish_lock = threading.RLock()
        self._abandoned = False

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop_event.set()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    # -- the thread ------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug in this code: fail the stream, never the process
            logger.exception("stream %s: capture failed unexpectedly", self.spec.stream)
            with self._finish_lock:
                if not self.machine.finished and not self._abandoned:
                    self._transition(self.machine.failed(self._clock(), f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._finish_lock:
            if self._abandoned:
                return
            self._end_sequence(self._final_reason())

    def abandon(self) -> None:
        """Called by the stage when this thread is stuck in a blocking open or read after a stop:
        end the stream now; the thread exits on its own once OpenCV returns."""
        with self._finish_lock:
            if self._abandoned or self.outbox.closed:
                return
            self._abandoned = True
            if (transition := self.machine.stop(self._clock(), self._stop_reason)) is not None:
                self._transition(transition)
            self._end_sequence(self._final_reason())

    def _final_reason(self) -> str:
        state = self.machine.state
        if state is StreamState.FAILED:
            return "failed"
        if self.machine.reason in ("removed", "stopped"):
            return self.machine.reason
        return "end_of_stream"

    def _run(self) -> None:
        while True:
            now = self._clock()
            if self._stop_event.is_set():
                with self._finish_lock:
                    if not self._abandoned and (transition := self.machine.stop(now, self._stop_reason)) is not None:
                        self._transition(transition)
                return
            step = self.machine.next_action(now)
            if step.action is Action.DONE:
                return
            if step.action is Action.WAIT:
                self._stop_event.wait(max(0.0, step.until - now))
                continue
            if step.action is Action.OPEN:
                reader = self._open()
                if reader is not None:
                    self._read(reader)

    def _open(self) -> FrameReader | None:
        try:
            if self.s.decoder == "nvdec" and self._source.kind in (SourceKind.FILE, SourceKind.NETWORK):
                from pipeline.sources.nvdec import NvdecReader

                reader = NvdecReader(self._source.raw, self.spec.live, self.s.width, self.s.height, self.s.gpu,
                                     origin=self._origin, clock=self._clock)
            else:
                reader = self._opener(
                    self._source, image_fps=self.spec.image_fps, open_timeout_s=self.spec.open_timeout_s,
                    read_timeout_s=self.spec.stale_after_s, origin=self._origin, clock=self._clock,
                    decoder_threads=self.s.decoder_threads,
                )
        except SourceOpenError as exc:
            self._transition(self.machine.open_failed(self._clock(), str(exc), exc.permanent))
            return None
        self._transition(self.machine.opened(self._clock()))
        if reader.fps is not None and reader.fps < self.s.step_rate:
            logger.warning(
                "stream %s: the source runs at %.2f frames/s, slower than the model's %.2f steps/s; "
                "each frame becomes a step and steps are %.2f s apart instead of %.2f s",
                self.spec.stream, reader.fps, self.s.step_rate, 1 / reader.fps, 1 / self.s.step_rate,
            )
        return reader

    # -- reading -----------------------------------------------------------------
    def _read(self, reader: FrameReader) -> None:
        """Read sequences until the source drops, ends or the stream stops; closes the reader(s)."""
        try:
            while True:
                outcome = self._read_sequence(reader)
                if outcome != "eof" or self._stop_event.is_set():
                    return
                if reader.is_live:
                    self._transition(self.machine.dropped(self._clock(), "source_ended", "the source ended the stream"))
                    return
                if reader.ended_early:
                    logger.warning(
                        "stream %s: the file could not be read past %.2f s (truncated or damaged); "
                        "its sequence ends here", self.spec.stream, self._last_t if self._last_t is not None else 0.0,
                    )
                if not self.spec.loop or self._last_t is None:
                    self._transition(self.machine.ended(self._clock()))
                    return
                # The next pass continues stream time, so outputs stay ordered by t.
                self._end_sequence("loop")
                self._t_offset = self._last_t + 1.0 / self.s.step_rate
                self._next_start_reason = "loop"
                reader.close()
                try:
                    reader = self._opener(self._source, image_fps=self.spec.image_fps,
                                          decoder_threads=self.s.decoder_threads)
                except SourceOpenError as exc:
                    self._transition(self.machine.failed(self._clock(), f"cannot reopen for the next loop: {exc}"))
                    return
        finally:
            reader.close()

    def _read_sequence(self, reader: FrameReader) -> str:
        """Frames of one sequence into the outbox. Returns 'eof', 'dropped' or 'stopped'."""
        self._sequence += 1
        start_reason, self._next_start_reason = self._next_start_reason, "reconnect"
        sampler = StepSampler(self.s.step_rate)
        pacer = ReplayPacer(self._clock)
        realtime = self.spec.realtime and not reader.is_live
        resume_after = self._resume_after_t if not self.spec.loop else None
        if self._resume_after_t is not None and self.spec.loop:
            self._t_offset = self._resume_after_t + 1.0 / self.s.step_rate
        if resume_after is not None:
            # Continue the step grid of the process that died, so a resumed replay takes exactly
            # the steps it would have taken (the first frame at or after each k / step_rate).
            sampler.resume_after(resume_after)
        self._resume_after_t = None
        decode_errors = reader.decode_errors
        first_seen: tuple[float, float] | None = None
        seen = 0

        def want(t: float) -> bool:
            if resume_after is not None and t <= resume_after:
                return False
            return sampler.accept(t + self._t_offset)

        while not self._stop_event.is_set():
            frame = reader.read(want)
            now = self._clock()
            if reader.decode_errors != decode_errors:
                self.counters.dropped_frames("decode_error", reader.decode_errors - decode_errors)
                decode_errors = reader.decode_errors
            if frame is None:
                if reader.is_live:
                    reason = "stale" if self.machine.is_stale(now) else "read_failed"
                    detail = (f"no frame for {self.spec.stale_after_s:g} s" if reason == "stale"
                              else "the source stopped delivering frames")
                    self._end_sequence("reconnect")
                    self._transition(self.machine.dropped(now, reason, detail))
                    return "dropped"
                return "eof"
            self.machine.frame(now)
            t = frame.t + self._t_offset
            if resume_after is not None and frame.t <= resume_after:
                continue  # sent before the restart: counted by the process that sent it
            seen += 1
            if reader.is_live:
                first_seen = first_seen or (now, t)
                if seen == SLOW_SOURCE_FRAMES:
                    self._judge_live_rate(first_seen, (now, t), seen)
            if frame.image is None:
                self.counters.dropped_frames("sampling")
                continue
            if realtime and (delay := pacer.delay(t)) > 0 and self._stop_event.wait(delay):
                # Stopped while pacing: this frame was read, so it still goes out.
                pass
            # NVDEC hands over frames already converted and resized on the GPU.
            pixels = frame.image if getattr(reader, "prepared", False) else prepare_frame(frame.image, self.s.width,
                                                                                           self.s.height)
            out = OutFrame(self._sequence, start_reason, t, self._wall(), pixels, self._preview(frame.image, pixels))
            if not self.outbox.put_frame(out, self._stop_event):
                return "stopped"
            self._last_t = t
        return "stopped"

    def _preview(self, image: np.ndarray, pixels: np.ndarray) -> np.ndarray | None:
        if not self.s.preview_width:
            return None
        if image is pixels:  # NVDEC hands over only the model's RGB input
            return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        width, height = preview_size(image.shape[1], image.shape[0], self.s.preview_width)
        if (width, height) == (image.shape[1], image.shape[0]):
            return image
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

    def _judge_live_rate(self, first: tuple[float, float], last: tuple[float, float], frames: int) -> None:
        span = last[1] - first[1]
        if span <= 0:
            return
        rate = (frames - 1) / span
        if rate < 0.9 * self.s.step_rate:
            logger.warning(
                "stream %s: the source delivers %.2f frames/s, fewer than the model's %.2f steps/s; "
                "each frame becomes a step, at the source's pace", self.spec.stream, rate, self.s.step_rate,
            )

    def _end_sequence(self, reason: str) -> None:
        t = self._last_t if self._last_t is not None else 0.0
        self.outbox.put_end(EndOfSequence(self._sequence, reason, t))

    # -- state changes -----------------------------------------------------------
    def _transition(self, transition: Transition) -> None:
        self._log(transition)
        if transition.after is StreamState.RECONNECTING and transition.before is StreamState.LIVE and self._metrics:
            self._metrics.reconnects.labels(self.spec.stream).inc()
        self._report(StreamChanged(
            self.spec.stream, self.spec.generation, transition.after.value, transition.reason, transition.error,
            transition.retry_in_s,
        ))

    def _log(self, tr: Transition) -> None:
        name = self.spec.stream
        if tr.after is StreamState.LIVE:
            logger.info("stream %s: live (%s)", name, self._source.display)
        elif tr.after is StreamState.ENDED:
            logger.info("stream %s: ended (%s)", name, tr.reason)
        elif tr.after is StreamState.FAILED:
            logger.error("stream %s: failed: %s", name, tr.error)
        elif tr.before is StreamState.LIVE:
            logger.warning("stream %s: %s (%s); reconnecting in %.1f s", name, tr.reason.replace("_", " "), tr.error,
                           tr.retry_in_s or 0.0)
            self._last_logged_error = ""
        else:
            # A camera that stays down: say so when the reason changes and every tenth attempt, not every time.
            level = logging.WARNING if (tr.error != self._last_logged_error or tr.attempt % 10 == 1) else logging.DEBUG
            logger.log(level, "stream %s: %s; retrying in %.1f s (attempt %d)", name, tr.error, tr.retry_in_s or 0.0,
                       tr.attempt)
            self._last_logged_error = tr.error


class CaptureStage:
    """The capture process: its streams, its sender, and its end of the control channel."""

    def __init__(self, settings: CaptureSettings, link: StageLink, socket: zmq.Socket, metrics=None,
                 parent: ParentWatch | None = None, opener: Callable[..., FrameReader] = open_source,
                 preview_socket: zmq.Socket | None = None) -> None:
        self.s = settings
        self._link = link
        self._metrics = metrics
        self._parent = parent
        self._opener = opener
        self._sender = FrameSender(socket, settings.stage, metrics, preview_socket=preview_socket)
        self._runners: dict[str, StreamRunner] = {}
        self._reports: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._stop_asked: dict[str, float] = {}  # stream -> when it was asked to stop

    def run(self) -> dict:
        self._sender.start()
        self._link.hello()
        next_heartbeat = 0.0
        while True:
            for command in self._link.receive(timeout_s=0.1):
                self._handle(command)
            self._forward_reports()
            self._forget_finished()
            if self._sender.error is not None:
                raise RuntimeError(f"the frame sender failed: {self._sender.error}") from self._sender.error
            now = time.monotonic()
            if now >= next_heartbeat:
                self._link.send(Heartbeat(self.s.stage, self._stream_progress()))
                next_heartbeat = now + HEARTBEAT_S
            if self._parent is not None and not self._parent.parent_alive():
                # Nobody is left to drain to: stop now, leaving blocked threads to die with the process.
                logger.error("%s: the supervisor is gone; stopping", self.s.stage)
                self._stop_all("stopped")
                return {"streams": self._stream_progress(), "orphaned": True}
            if self._stopping and not self._runners:
                break
        self._sender.finish()
        self._sender.join()
        self._forward_reports()
        return {"streams": self._stream_progress()}

    def _handle(self, command: object) -> None:
        if isinstance(command, AddStream):
            self._add(command)
        elif isinstance(command, RemoveStream):
            runner = self._runners.get(command.stream)
            if runner is not None:
                runner.request_stop("removed")
                self._stop_asked.setdefault(command.stream, time.monotonic())
        elif isinstance(command, StopReading):
            self._stopping = True
            self._stop_all("stopped")
        else:
            logger.warning("%s: ignoring unexpected command %s", self.s.stage, type(command).__name__)

    def _add(self, spec: AddStream) -> None:
        if spec.stream in self._runners:
            logger.warning("%s: stream %s is already served here; ignoring the second add", self.s.stage, spec.stream)
            return
        counters = StreamCounters(spec.stream, self._metrics)
        outbox = StreamOutbox(spec.stream, spec.generation, spec.live, spec.buffer_frames if spec.live else 2,
                              spec.stale_after_s, counters, self._sender.wake)
        self._sender.attach(outbox)
        runner = StreamRunner(spec, self.s, outbox, self._reports.put, self._metrics, self._opener)
        self._runners[spec.stream] = runner
        runner.start()

    def _stop_all(self, reason: str) -> None:
        now = time.monotonic()
        for name, runner in self._runners.items():
            runner.request_stop(reason)
            self._stop_asked.setdefault(name, now)

    def _forget_finished(self) -> None:
        now = time.monotonic()
        for name, runner in list(self._runners.items()):
            asked = self._stop_asked.get(name)
            if runner.is_alive() and asked is not None and now - asked >= STOP_GRACE_S:
                # Stuck in OpenCV's open or read (up to its timeout): end the stream without it.
                runner.abandon()
            if (not runner.is_alive() or runner.abandoned) and runner.outbox.finished:
                del self._runners[name]
                self._stop_asked.pop(name, None)

    def _forward_reports(self) -> None:
        while True:
            try:
                self._link.send(self._reports.get_nowait())
            except queue.Empty:
                return

    def _stream_progress(self) -> dict[str, dict]:
        return {
            name: {"last_t": r.counters.last_sent_t, "state": r.machine.state.value, "generation": r.spec.generation}
            for name, r in self._runners.items()
        }
