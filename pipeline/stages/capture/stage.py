"""Capture stage: one process serves many streams.

Each stream is a thread (:class:`~pipeline.stages.capture.runner.StreamRunner`)
that owns the stream's state machine and reader and puts frames into the
stream's outbox (:mod:`pipeline.stages.capture.outbox`, where the drop
policy lives); one sender thread (:mod:`pipeline.stages.capture.sender`)
owns the ZeroMQ socket and sends from every outbox in turn. This module is
the process's side of the control channel: it adds and removes streams as
the supervisor says, forwards their state changes, reports each stream's
progress in its heartbeat, and on ``StopReading`` stops every source and
finishes once each stream's END has gone out.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable

import zmq

from pipeline.sources.frames import FrameReader
from pipeline.sources.readers import open_source
from pipeline.stages.capture.outbox import StreamCounters, StreamOutbox
from pipeline.stages.capture.runner import StreamRunner
from pipeline.stages.capture.sender import FrameSender
from pipeline.stages.loop import LoopEnd, StageLoop
from pipeline.stages.settings import CaptureSettings
from pipeline.transport.control import AddStream, Heartbeat, RemoveStream, StopReading

logger = logging.getLogger(__name__)

# A stream asked to stop gets this long to finish its read before the stage ends it without the thread.
STOP_GRACE_S = 0.5
# Capture has no socket of its own to wait on: the loop waits for commands this long each turn.
COMMAND_WAIT_S = 0.1


class CaptureStage:
    """The capture process: its streams, its sender, and its end of the control channel."""

    command_wait_s = COMMAND_WAIT_S

    def __init__(self, settings: CaptureSettings, socket: zmq.Socket, metrics=None,
                 opener: Callable[..., FrameReader] = open_source, preview_socket: zmq.Socket | None = None,
                 report: Callable[[object], None] | None = None) -> None:
        self.s = settings
        self._metrics = metrics
        self._opener = opener
        self._sender = FrameSender(socket, settings.stage, metrics, preview_socket=preview_socket)
        self._runners: dict[str, StreamRunner] = {}
        self._reports: queue.SimpleQueue = queue.SimpleQueue()
        self._forward = report
        self._stopping = False
        self._stop_asked: dict[str, float] = {}  # stream -> when it was asked to stop

    def run(self, loop: StageLoop) -> dict:
        self._sender.start()
        if loop.run(self) is LoopEnd.ORPHANED:
            # Nobody is left to drain to: stop now, leaving blocked threads to die with the process.
            self._stop_all("stopped")
            return {"streams": self._stream_progress(), "orphaned": True}
        self._sender.finish()
        self._sender.join()
        self._forward_reports()
        return {"streams": self._stream_progress()}

    # -- the loop's turns --------------------------------------------------------------------
    def handle(self, command: object) -> None:
        if isinstance(command, AddStream):
            self._add(command)
        elif isinstance(command, RemoveStream):
            runner = self._runners.get(command.stream)
            if runner is not None:
                runner.request_stop(command.reason)
                self._stop_asked.setdefault(command.stream, time.monotonic())
        elif isinstance(command, StopReading):
            self._stopping = True
            self._stop_all("stopped")
        else:
            logger.warning("%s: ignoring unexpected command %s", self.s.stage, type(command).__name__)

    def work(self, draining: bool) -> bool:
        self._forward_reports()
        self._forget_finished()
        if self._sender.error is not None:
            raise RuntimeError(f"the frame sender failed: {self._sender.error}") from self._sender.error
        return bool(self._runners)

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.s.stage, self._stream_progress())

    @property
    def finished(self) -> bool:
        return self._stopping and not self._runners

    # -- streams -------------------------------------------------------------------------------
    def _add(self, spec: AddStream) -> None:
        current = self._runners.get(spec.stream)
        if current is not None and spec.start_reason == "rewind" and spec.generation > current.spec.generation:
            # The temporal worker died and continues this replay from its snapshot: read it again from there,
            # in a new generation. The old sequence is not ended (its state lives on); what it still held goes.
            logger.info("%s: stream %s: reading it again after t=%.3f s (generation %d)", self.s.stage, spec.stream,
                        spec.resume_after_t or 0.0, spec.generation)
            current.discard()
            del self._runners[spec.stream]
            self._stop_asked.pop(spec.stream, None)
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
        """The streams' state changes, from their threads to the supervisor (the link is this thread's)."""
        while True:
            try:
                report = self._reports.get_nowait()
            except queue.Empty:
                return
            if self._forward is not None:
                self._forward(report)

    def _stream_progress(self) -> dict[str, dict]:
        return {
            name: {"last_t": r.counters.last_sent_t, "state": r.machine.state.value, "generation": r.spec.generation}
            for name, r in self._runners.items()
        }
