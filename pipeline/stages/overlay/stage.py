"""Overlay stage: draw what the model sees, beside the scoring path.

PULLs preview frames from the capture workers and scored steps and events
from the temporal worker (``pipeline.stages.overlay.feed``), pairs each step with
its frame (``pipeline.stages.overlay.pairing``), draws the annotated frame
(``pipeline.stages.overlay.drawing``) and hands it to an H.264 video per stream
(``--overlay-out``) and to the live page's board (``pipeline.stages.overlay.board``).

Nothing upstream waits for this stage: its senders never block, so a slow
or stopped overlay costs overlay frames (counted), not scoring. If it dies
the supervisor restarts it; the videos it was writing stay playable up to
their last fragment and the new process starts new files (the old ones are
rotated, as every output file is).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from pipeline.outputs.files import OutputError, prepare_output
from pipeline.stages.loop import FedBySocket, StageLoop
from pipeline.stages.overlay.board import LiveBoard
from pipeline.stages.overlay.drawing import OverlayLayout, render_overlay
from pipeline.stages.overlay.feed import EVENT_KIND, STEP_KIND, OverlayMessageError, decode_json_part
from pipeline.stages.overlay.pairing import MatchedStep, StepMatcher
from pipeline.stages.overlay.video import OverlayVideoError, OverlayVideoWriter
from pipeline.stages.settings import OverlaySettings
from pipeline.transport.control import Heartbeat
from pipeline.transport.messages import FRAME_KIND, MessageError, decode_frame

logger = logging.getLogger(__name__)
PUBLISH_EVERY_S = 0.25
# A writer with no frame for this long is closed (a removed or ended stream); a later frame opens a new file.
IDLE_CLOSE_S = 30.0


class OverlayStage(FedBySocket):
    """The overlay process's work: previews and scored steps in, paired, drawn, written and published."""


    def __init__(self, settings: OverlaySettings, frames_in: zmq.Socket, metrics=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self._in = frames_in
        self._metrics = metrics
        self._clock = clock
        self._matcher = StepMatcher(max_pending=64, max_wait_s=5.0, clock=clock)
        self._board = LiveBoard(settings.classes, min_interval_s=0.5, jpeg_quality=settings.jpeg_quality, clock=clock)
        self._writers: dict[str, OverlayVideoWriter] = {}
        self._last_frame: dict[str, float] = {}
        self._failed_streams: set[str] = set()
        self._live_dir = Path(settings.live_dir) if settings.live_dir else None
        self._out_dir = Path(settings.out_dir) if settings.out_dir else None
        self.rendered: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self._malformed = 0
        self._next_publish = 0.0

    # -- intake ----------------------------------------------------------------------------------
    def receive(self, timeout_s: float) -> int:
        if not self._in.poll(int(max(0.0, timeout_s) * 1000)):
            return 0
        got = 0
        while got < 256:
            try:
                parts = self._in.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            got += 1
            try:
                self._handle(parts)
            except (MessageError, OverlayMessageError, KeyError, TypeError, ValueError) as exc:
                self._malformed += 1
                if self._metrics:
                    self._metrics.malformed_messages.labels("overlay").inc()
                if self._malformed <= 5:
                    logger.warning("overlay: dropped a malformed message (%s)", exc)
        return got

    def _handle(self, parts) -> None:
        kind = bytes(parts[0])
        if kind == FRAME_KIND:
            header, pixels = decode_frame(parts)
            if pixels is None:
                return
            matched = self._matcher.add_frame(header.stream, header.t, pixels.copy())
        elif kind == STEP_KIND:
            body = decode_json_part(parts)
            probs = [float(p) for p in body["probs"]]
            if len(probs) != len(self.s.classes):
                raise OverlayMessageError(f"{len(probs)} probabilities for {len(self.s.classes)} classes")
            matched = self._matcher.add_step(body["stream"], float(body["t"]), probs)
        elif kind == EVENT_KIND:
            self._board.event(decode_json_part(parts))
            return
        else:
            raise OverlayMessageError(f"unknown message kind {kind[:32]!r}")
        if matched is not None:
            self._draw(matched)

    # -- drawing ---------------------------------------------------------------------------------
    def _draw(self, step: MatchedStep) -> None:
        height, width = step.frame.shape[:2]
        layout = OverlayLayout(width, height, self.s.classes)
        canvas = render_overlay(step.frame, layout, step.stream, step.t, step.probs,
                                self._board.active(step.stream), self.s.on_threshold)
        if self._out_dir is not None and step.stream not in self._failed_streams:
            self._write(step.stream, canvas, step.t)
        self._board.step(step.stream, step.t, step.probs, canvas if self._live_dir is not None else None)
        self.rendered[step.stream] = self.rendered.get(step.stream, 0) + 1
        if self._metrics:
            self._metrics.overlay_frames.labels(step.stream).inc()

    def _write(self, stream: str, canvas, t: float) -> None:
        writer = self._writers.get(stream)
        try:
            if writer is None:
                path = self._out_dir / f"{_file_stem(stream)}.mp4"
                prepare_output(path, "--overlay-out", self.s.existing, self.s.keep_rotated)
                writer = self._writers[stream] = OverlayVideoWriter(path, canvas.shape[1], canvas.shape[0],
                                                                    1.0 / self.s.step_rate)
                logger.info("overlay: stream %s -> %s", stream, path)
            elif canvas.shape[:2] != (writer.height, writer.width):
                import cv2

                canvas = cv2.resize(canvas, (writer.width, writer.height), interpolation=cv2.INTER_AREA)
            writer.write(canvas, t)
            self._last_frame[stream] = self._clock()
        except (OverlayVideoError, OutputError, OSError) as exc:
            # This stream's video stops; its live frames, the other videos and scoring go on.
            self._failed_streams.add(stream)
            logger.error("overlay: the video of stream %s stops: %s", stream, exc)
            if writer is not None:
                self._close(stream)

    def _close(self, stream: str) -> None:
        writer = self._writers.pop(stream, None)
        self._last_frame.pop(stream, None)
        if writer is None:
            return
        try:
            writer.close()
        except Exception as exc:  # the file is fragmented: what was written stays playable
            logger.error("overlay: closing the video of stream %s failed: %s", stream, exc)
        logger.info("overlay: stream %s: %d frame(s) in %s", stream, writer.frames, writer.path)

    # -- bookkeeping -----------------------------------------------------------------------------
    def housekeeping(self, force: bool = False) -> None:
        self._matcher.expire()
        self._count_unmatched()
        now = self._clock()
        for stream, last in list(self._last_frame.items()):
            if now - last >= IDLE_CLOSE_S:
                self._close(stream)
        if self._live_dir is not None:
            self._board.publish(self._live_dir, force=force)

    def _count_unmatched(self) -> None:
        for stream, count in self._matcher.unmatched.items():
            self.dropped[stream] = self.dropped.get(stream, 0) + count
            self._board.lost(stream, count)
            if self._metrics:
                self._metrics.overlay_dropped.labels(stream, "unmatched").inc(count)
        self._matcher.unmatched.clear()

    def finish(self) -> dict:
        self._matcher.flush()
        self.housekeeping(force=True)
        for stream in list(self._writers):
            self._close(stream)
        return {"streams": {name: {"rendered": self.rendered.get(name, 0), "unmatched": self.dropped.get(name, 0)}
                            for name in sorted(set(self.rendered) | set(self.dropped))}}

    # -- the loop's turns ------------------------------------------------------------------------
    def run(self, loop: StageLoop) -> dict:
        loop.run(self)
        return self.finish()

    def handle(self, command: object) -> None:
        logger.warning("overlay: ignoring unexpected command %s", type(command).__name__)

    def work(self, draining: bool) -> bool:
        got = self.receive(0.05)
        now = self._clock()
        if now >= self._next_publish:
            self.housekeeping()
            self._next_publish = now + PUBLISH_EVERY_S
        return got > 0

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.s.stage, {}, {"videos": len(self._writers)})


def _file_stem(stream: str) -> str:
    """Stream names are free text: keep what a file name can hold."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stream).strip(".")
    return stem or "stream"
