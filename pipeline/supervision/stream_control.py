"""The supervisor's stream requests: add, remove, and (cluster mode) resume a stream from another node's
snapshot or move one out to another node.

:class:`StreamControl` is a part of ``Supervisor`` (it uses the supervisor's table, stages, config and
control channel); it lives here so that the supervisor's module keeps to its loop. The table
(``registry.py``) decides; this module tells the stages.

A stream arriving from another node (``resume_stream``) waits until the temporal worker has put its
snapshot back (``ResumeStream``, answered by ``ResumeReady``); only then is it handed to a capture
process, which reads a replay on after the snapshot's step, on its step grid, and starts a live
stream's time where the snapshot's left off. Its first frame continues the restored state.

A stream leaving for another node (``move_out``) is ended by its capture process with reason
``moved``; the temporal worker snapshots it at that END (a step boundary: every frame read was
stepped), keeps its actions open, and reports where its state was left (``StreamMovedOut``). The
stream's row then says ``moved``: the cluster's coordinator places it on the next node.
"""

from __future__ import annotations

import logging
import time

from pipeline.config import SourceConfig, stream_name
from pipeline.sources.uri import SourceKind, UriError, classify, redact
from pipeline.stages.settings import StageKind
from pipeline.supervision import report
from pipeline.supervision.preflight import check_recorded_source
from pipeline.supervision.registry import ResumeRequest, StreamRequestError, UnknownStreamError
from pipeline.transport.control import RemoveStream, ResumeReady, ResumeStream, StreamMovedOut

logger = logging.getLogger(__name__)

# How long a moving stream's capture END may precede the temporal worker's word on its snapshot before
# the stream is reported moved without one (a capture process that died mid-move never sends the END).
MOVE_REPORT_TIMEOUT_S = 15.0


class StreamControl:
    """The supervisor's stream requests (mixed into ``Supervisor``)."""

    def _add_stream(self, source: SourceConfig, from_api: bool, resume: ResumeRequest | None = None) -> dict:
        name = stream_name(source)
        try:
            kind = classify(source.uri).kind
        except UriError as exc:
            raise StreamRequestError(str(exc)) from None
        live = source.mode == "live" or (source.mode == "auto" and kind.live)
        if from_api and kind in (SourceKind.FILE, SourceKind.FOLDER):
            check_recorded_source(source)
        capture = [s.name for s in self._of_kind(StageKind.CAPTURE) if not s.given_up]
        entry = self.table.add(name, source, live, capture, resume)
        if resume is not None:
            self._ask_resume(entry)
        self._deliver_streams()
        if from_api:
            logger.info("stream %s added (%s) on %s%s", name, redact(source.uri), entry.worker,
                        f", resuming after a {resume.origin}" if resume else "")
        return report.stream_row(entry)

    def _resume_stream(self, source: SourceConfig, resume: ResumeRequest) -> dict:
        """A stream that comes from another node (lost or drained): continued from its snapshot."""
        return self._add_stream(source, from_api=True, resume=resume)

    def _ask_resume(self, entry) -> None:
        temporal = self._stages["temporal"]
        if temporal.ready:
            self._send(temporal, ResumeStream(entry.name, entry.generation, entry.resume.origin,
                                              dict(entry.resume.open_actions), entry.resume.last_t))

    def _ask_pending_resumes(self) -> None:
        """A (re)started temporal worker: ask it for every resume still unanswered."""
        for entry in self.table.active():
            if entry.awaiting_resume:
                self._ask_resume(entry)

    def _on_resume_ready(self, message: ResumeReady) -> None:
        age = max(0.0, time.time() - message.wall_time) if message.wall_time is not None else 0.0
        entry = self.table.resumed(message.stream, message.generation, message.restored, message.t, age)
        if entry is None:
            return
        if message.restored:
            logger.info("stream %s: its state is restored (%s); it continues after t=%.3f s", entry.name,
                        entry.resume.origin, message.t)
        else:
            logger.warning("stream %s: no usable snapshot to continue (%s); it starts a new sequence", entry.name,
                           entry.resume.origin)
        self._deliver_streams()

    def _remove_stream(self, name: str) -> dict:
        entry = self.table.mark_removing(name)
        worker = self._stages.get(entry.worker or "")
        if not entry.delivered:  # never handed to a capture process: nothing was read, nothing to end but the entry
            self.table.end(name, "removed")
        elif worker is not None and worker.ready:
            self._send(worker, RemoveStream(name))
        logger.info("stream %s: removal requested", name)
        return report.stream_row(entry)

    def _move_out(self, name: str) -> dict:
        """Stop ``name`` at a step boundary with its state snapshotted, for another node to continue."""
        entry = self.table.moving(name, self._clock())
        worker = self._stages.get(entry.worker or "")
        if not entry.delivered:  # nothing was read here: its state is wherever it came from
            self.table.moved_out(name, entry.generation, False, -1, None)
        elif worker is not None and worker.ready:
            self._send(worker, RemoveStream(name, "moved"))
        logger.info("stream %s: moving out to another node", name)
        return report.stream_row(entry)

    def _on_moved_out(self, message: StreamMovedOut) -> None:
        entry = self.table.moved_out(message.stream, message.generation, message.snapshotted, message.seq, message.t)
        if entry is not None:
            logger.info("stream %s: moved out (%s)", entry.name,
                        f"its state snapshotted at t={message.t:.3f} s" if message.snapshotted else "no snapshot")

    def _check_moves(self, now: float) -> None:
        """A moving stream whose capture ended it but whose snapshot word never came: moved without one
        (the next node still loads whatever snapshot the store holds)."""
        for entry in self.table.entries():
            if entry.moving_since is None or entry.moved is not None or not entry.finished:
                continue  # still read here (its capture has not ended it): it must not run on two nodes
            if now - entry.moving_since > MOVE_REPORT_TIMEOUT_S:
                logger.warning("stream %s: no word on its last snapshot within %.0f s of the move; it moves on "
                               "with what the store holds", entry.name, MOVE_REPORT_TIMEOUT_S)
                try:
                    self.table.moved_out(entry.name, entry.generation, False, -1, None)
                except UnknownStreamError:
                    pass
