"""One stream in the capture process: a thread that owns the stream's state machine and its reader.

It opens the source, decodes (OpenCV releases the GIL), samples by timestamp
to the model's step rate, resizes to the model input and puts frames into
the stream's outbox. A sequence starts (START) at every open, reconnect,
loop pass or capture restart, and ends with an END-only marker carrying its
reason. Every state change is reported to the supervisor and logged, naming
the stream.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from pipeline.backoff import Backoff
from pipeline.sources.decoding import prepare_frame
from pipeline.sources.frames import FrameReader, SourceOpenError
from pipeline.sources.lifecycle import Action, ReconnectPolicy, StreamState, StreamStateMachine, Transition
from pipeline.sources.readers import open_source
from pipeline.sources.sampling import StepSampler
from pipeline.sources.uri import SourceKind, classify
from pipeline.stages.capture.outbox import EndOfSequence, OutFrame, StreamOutbox
from pipeline.stages.overlay.drawing import preview_size
from pipeline.stages.settings import CaptureSettings
from pipeline.transport.control import AddStream, StreamChanged

logger = logging.getLogger(__name__)

SLOW_SOURCE_FRAMES = 20  # frames seen before judging a live source's rate


class ReplayPacer:
    """Releases frames of stream time ``t`` no earlier than ``start + t / speed`` on the wall clock
    (``speed`` 1: the recording's own rate; 1.005: a camera whose clock runs 0.5% fast)."""

    def __init__(self, clock: Callable[[], float], speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"replay speed must be positive, got {speed}")
        self._clock = clock
        self._speed = speed
        self._start: float | None = None

    def delay(self, t: float) -> float:
        now = self._clock()
        if self._start is None:
            self._start = now - t / self._speed
        return max(0.0, self._start + t / self._speed - now)



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
        policy = ReconnectPolicy(backoff, spec.reconnect.get("max_attempts"), spec.stale_after_s,
                                 **{k: spec.reconnect[k] for k in ("stable_s", "slow_s") if k in spec.reconnect})
        self.machine = StreamStateMachine(spec.stream, spec.live, policy, rng or random.Random(), clock())
        # Live stream time counts from here, across reconnects (and across a restart of this process).
        self._origin = clock() - (spec.start_t or 0.0)
        self._sequence = 0
        self._next_start_reason = spec.start_reason
        self._t_offset = 0.0
        self._resume_after_t = spec.resume_after_t
        self._last_t: float | None = None
        self._rtsp_transport = spec.rtsp_transport  # auto until a server has shown what it takes
        self._last_logged: tuple | None = None  # what the last warning about a down or flapping source said
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

    def discard(self) -> None:
        """Replaced by a rewind: stop without an END or a state change, and let go of what the outbox
        holds (never sent, so never counted: the rewind reads those frames again)."""
        with self._finish_lock:
            self._abandoned = True
        self._stop_event.set()
        self.outbox.discard()

    def _stopping(self) -> bool:
        """Asked to stop, or already ended by the stage: no more state changes of this thread's own."""
        return self._abandoned or self._stop_event.is_set()

    def _final_reason(self) -> str:
        state = self.machine.state
        if state is StreamState.FAILED:
            return "failed"
        if self.machine.reason in ("removed", "moved", "stopped"):
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
                    decoder_threads=self.s.decoder_threads, rtsp_transport=self._rtsp_transport,
                )
        except SourceOpenError as exc:
            with self._finish_lock:
                if not self._stopping():
                    self._transition(self.machine.open_failed(self._clock(), str(exc), exc.permanent,
                                                              exc.needs_person))
            return None
        with self._finish_lock:
            if self._stopping():
                # Removed or stopped while the open was under way: the stream ended without this reader.
                reader.close()
                return None
            self._transition(self.machine.opened(self._clock()))
        self._keep_transport(getattr(reader, "transport", None))
        if reader.fps is not None and reader.fps < self.s.step_rate:
            logger.warning(
                "stream %s: the source runs at %.2f frames/s, slower than the model's %.2f steps/s; "
                "each frame becomes a step and steps are %.2f s apart instead of %.2f s",
                self.spec.stream, reader.fps, self.s.step_rate, 1 / reader.fps, 1 / self.s.step_rate,
            )
        return reader

    def _keep_transport(self, used: str | None) -> None:
        """With ``auto``, the transport that worked is kept for the stream's reconnects (said once)."""
        if used is None or self._rtsp_transport != "auto" or used == "tcp":
            return
        self._rtsp_transport = used
        logger.info("stream %s: the server refuses RTSP over TCP; reading it over %s from now on",
                    self.spec.stream, used.upper())

    # -- reading -----------------------------------------------------------------
    def _read(self, reader: FrameReader) -> None:
        """Read sequences until the source drops, ends or the stream stops; closes the reader(s)."""
        try:
            while True:
                outcome = self._read_sequence(reader)
                if outcome != "eof" or self._stop_event.is_set():
                    return
                if reader.is_live:
                    self._dropped(self._clock(), "source_ended", "the source ended the stream")
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
        pacer = ReplayPacer(self._clock, self.spec.speed)
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
                    self._dropped(now, reason, detail)
                    return "dropped"
                return "eof"
            self._transition(self.machine.frame(now))
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
            # A live frame that arrived late (a buffered burst) was captured earlier: the sender drops it as
            # stale once that is more than stale_after_s ago.
            out = OutFrame(self._sequence, start_reason, t, self._wall() - frame.age_s, pixels,
                           self._preview(frame.image, pixels))
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
    def _dropped(self, now: float, reason: str, detail: str) -> None:
        if self._metrics:
            self._metrics.reconnects.labels(self.spec.stream).inc()
        self._transition(self.machine.dropped(now, reason, detail))

    def _transition(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self._log(transition)
        self._report(StreamChanged(
            stream=self.spec.stream, generation=self.spec.generation, state=transition.after.value,
            reason=transition.reason, retry_in_s=transition.retry_in_s, error=transition.error,
        ))

    def _log(self, tr: Transition) -> None:
        name = self.spec.stream
        if tr.after is StreamState.LIVE:
            if tr.reason == "recovered":
                logger.info("stream %s: live again (frames for %g s after flapping)", name, self.machine.policy.stable_s)
            else:
                logger.info("stream %s: live (%s)", name, self._source.display)
            self._last_logged = None
        elif tr.after is StreamState.ENDED:
            logger.info("stream %s: ended (%s)", name, tr.reason)
        elif tr.after is StreamState.FAILED:
            logger.error("stream %s: failed: %s", name, tr.error)
        elif tr.before is StreamState.LIVE and tr.reason != "flapping":
            logger.warning("stream %s: %s (%s); reconnecting in %.1f s", name, tr.reason.replace("_", " "), tr.error,
                           tr.retry_in_s or 0.0)
            self._last_logged = None
        else:
            # A camera that stays down or keeps flapping: say so when what is wrong changes and every tenth
            # attempt, not every time (a flapping stream's message counts its drops: the reason is what matters).
            what = (tr.reason,) if tr.reason == "flapping" else (tr.reason, tr.error)
            level = logging.WARNING if (what != self._last_logged or tr.attempt % 10 == 1) else logging.DEBUG
            logger.log(level, "stream %s: %s%s; retrying in %.1f s (attempt %d)", name,
                       "flapping: " if tr.reason == "flapping" else "", tr.error, tr.retry_in_s or 0.0, tr.attempt)
            self._last_logged = what
