"""The temporal worker's durable-state turns: where each stream is, its last snapshot at an END, the
restore after a crash (and the replay rewind it asks for), the continuation of a previous run, and
the actions a dead predecessor left open.

:class:`DurableStreams` is a part of ``TemporalWorker`` (it uses the worker's table, detector,
positions, outputs and settings); it lives here so that the worker's module keeps to stepping.
The decisions are in ``restoring.py`` (whether a snapshot may be continued) and ``rewind.py``
(which steps a rewind outputs again).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.events import ActionEvent
from pipeline.stages.temporal.restoring import restart_shift
from pipeline.stages.temporal.rewind import Rewind, written_after
from pipeline.stages.temporal.state_table import StateTableFull
from pipeline.state.snapshot import StreamSnapshot
from pipeline.transport.control import ResumeReady, ResumeStream, StreamMovedOut, StreamRestored
from pipeline.transport.messages import START_FLAG, EmbeddingHeader, Flags

logger = logging.getLogger(__name__)

MOVE_WRITE_TIMEOUT_S = 10.0  # a moving stream's last snapshot must be written before it is placed elsewhere


@dataclass
class StreamPosition:
    generation: int
    last_t: float | None = None  # the last step scored, over every generation
    last_seq: int = -1  # the message number of that step, within ``generation`` (events take their id from it)
    repeat_until_t: float | None = None  # after a capture restart: steps up to here were already scored
    carry_start: str | None = None  # a START dropped as a repeat passes to the next frame
    resumed: StreamSnapshot | None = None  # restored after a crash, until its first frame arrives
    rewind: Rewind | None = None  # a replay restored after a crash: read again from its snapshot
    moved_in: StreamSnapshot | None = None  # arrived from another node, restored: its first frame continues it
    # Its events are named in another run's numbering (it came from another node): message ``n`` of
    # ``generation`` is named (epoch, numbering generation, offset + n).
    numbering: tuple[str, int, int] | None = None

    def event_name(self, epoch: str, generation: int, seq: int) -> tuple[str, int, int]:
        """The (epoch, generation, message number) naming the events decided at ``seq`` of ``generation``."""
        if self.numbering is not None and generation == self.generation:
            named_epoch, named_generation, offset = self.numbering
            return named_epoch, named_generation, offset + seq
        if self.rewind is not None:
            return (epoch, *self.rewind.numbered(generation, seq))
        return epoch, generation, seq


class DurableStreams:
    """The worker's durable-state methods (mixed into ``TemporalWorker``)."""

    def _position_of(self, stream: str) -> StreamPosition | None:
        return self._positions.get(stream)

    def _last_snapshot(self, header: EmbeddingHeader) -> bool:
        """At an END, before the stream's row and track go: a drained stop keeps its last state for the
        next run, a move for the node the stream goes to; any other END ends its sequence, and its
        snapshot with it. True when a snapshot was taken."""
        if self._snapshots is None:
            return False
        if header.reason in ("stopped", "moved"):
            return self._snapshots.take([header.stream], self._table, self._detector, self._position_of,
                                        final=True) > 0
        self._snapshots.forget(header.stream)
        return False

    def _hand_over(self, header: EmbeddingHeader, snapshotted: bool) -> None:
        """A stream's END reason ``moved``: its actions stay open (the next node continues them from the
        snapshot just taken); once that snapshot is written, the supervisor hears where it ends."""
        self._detector.hand_over(header.stream)
        position = self._positions.get(header.stream)
        if snapshotted and not self._snapshots.wait_written(MOVE_WRITE_TIMEOUT_S):
            logger.error("temporal: stream %s: its snapshot was not written within %.0f s; it moves without its state",
                         header.stream, MOVE_WRITE_TIMEOUT_S)
            snapshotted = False
        logger.info("temporal: stream %s: moved out%s", header.stream,
                    f" at t={position.last_t:.3f} s, its state in its snapshot" if snapshotted and position else
                    " without a snapshot")
        if self._report is not None:
            self._report(StreamMovedOut(header.stream, header.generation, snapshotted,
                                        position.last_seq if snapshotted and position else -1,
                                        position.last_t if snapshotted and position else None))

    def resume_stream(self, command: ResumeStream) -> ResumeReady:
        """A stream arriving from another node: its snapshot put back now, and its first frame (in
        ``command.generation``) continues it. Without a usable snapshot, the actions the other node had
        open end here (reason ``command.origin``), and the stream starts a new sequence."""
        stream, origin = command.stream, command.origin
        snapshot = self._restorer.load(stream) if self._restorer is not None else None
        restored = False
        if snapshot is not None and stream not in self._table.active_streams:
            actions = command.open_actions if origin == "failover" else None  # a move's snapshot is exact
            try:
                restored = self._restorer.put_back(snapshot, self._table, self._detector, self._clock(), origin,
                                                   actions)
            except StateTableFull as exc:
                logger.warning("temporal: stream %s: not restored: %s", stream, exc)
        if restored:
            self._positions[stream] = StreamPosition(command.generation, snapshot.t, moved_in=snapshot,
                                                     numbering=_continued(snapshot, self.epoch, True))
            self._actions_changed = True
            return ResumeReady(stream, command.generation, True, snapshot.t, snapshot.wall_time)
        wall = self._wall()
        t = command.last_t or 0.0
        self._emit([ActionEvent(stream, action, "end", t, float(confidence), wall, origin)
                    for action, confidence in sorted(command.open_actions.items())], command.generation, -1)
        return ResumeReady(stream, command.generation, False)

    def restore_after_crash(self) -> set[str]:
        """Put back the streams a dead predecessor ran from their snapshots; the streams restored. The
        replays the supervisor will rewind (``settings.rewind``) wait for it, and it is told where."""
        if self._restorer is None or not self.s.restarted:
            return set()
        restored: dict[str, StreamSnapshot] = {}
        for stream, generation in sorted(self.s.known_generations.items()):
            snapshot = self._restorer.load(stream, generation)
            if snapshot is None:
                continue
            actions = self.s.orphaned_actions.get(stream, {}).get("actions", {})
            try:
                if not self._restorer.put_back(snapshot, self._table, self._detector, self._clock(), "crash", actions):
                    continue
            except StateTableFull as exc:  # cannot happen with a table of the predecessor's size; said if it does
                logger.warning("temporal: stream %s: not restored: %s", stream, exc)
                continue
            self._positions[stream] = StreamPosition(generation, snapshot.t, snapshot.seq, resumed=snapshot,
                                                     numbering=_continued(snapshot, self.epoch, False))
            self._actions_changed = True  # reported at once: if this worker dies too, its successor knows
            restored[stream] = snapshot
        self._ask_rewinds({s: snap for s, snap in restored.items() if s in self.s.rewind})
        return set(restored)

    def _ask_rewinds(self, snapshots: dict[str, StreamSnapshot]) -> None:
        """Replays restored: wait for their rewind, knowing what the predecessor output after each snapshot."""
        if not snapshots:
            return
        outputs = self.s.outputs
        written = written_after(Path(outputs.scores_jsonl) if outputs.scores_jsonl else None,
                                Path(outputs.events_jsonl) if outputs.events_jsonl else None,
                                {s: snap.wall_time for s, snap in snapshots.items()})
        for stream, snapshot in snapshots.items():
            self._positions[stream].rewind = Rewind(stream, snapshot.generation, snapshot.seq, snapshot.t,
                                                    written[stream])
            self._rewinds_to_ask.append(StreamRestored(stream, snapshot.generation, snapshot.t))
            logger.info("temporal: stream %s: a replay: read again from its snapshot (t=%.3f s); its steps up to "
                        "t=%s s were output already", stream, snapshot.t, written[stream].last_step_t)

    def _continue_previous_run(self, item: tuple) -> tuple:
        """A live stream's first frame in this run (START, reason open): continue the previous run's
        snapshot instead of starting afresh, when there is a usable one."""
        header = item[0]
        if not (header.flags & START_FLAG and header.reason == "open" and header.live):
            return item
        snapshot = self._restorer.load(header.stream)
        if snapshot is None:
            return item
        shift = restart_shift(snapshot, header.t, self._wall())
        try:
            if not self._restorer.put_back(snapshot, self._table, self._detector, self._clock(), "restart", {}, shift):
                return item
        except StateTableFull:
            return item  # the step refuses the stream too, says so, and this frame comes round again
        return (replace(header, flags=Flags(header.flags) & ~Flags.START), *item[1:])

    def close_orphaned_actions(self, restored: Collection[str] = ()) -> None:
        """End the actions a dead predecessor had open: their streams' state is gone (``restored``: but
        for these streams, continued from their snapshots)."""
        wall = self._wall()
        for stream, info in sorted(self.s.orphaned_actions.items()):
            if stream in restored:
                continue
            for action, confidence in sorted(info.get("actions", {}).items()):
                # Dated at the predecessor's last step: no event of that action was decided there (it was open).
                self._emit([ActionEvent(stream, action, "end", float(info.get("t") or 0.0), float(confidence), wall,
                                        "restart")], int(info.get("generation") or 0), int(info.get("seq", -1)))


def _continued(snapshot: StreamSnapshot, epoch: str, moved_in: bool) -> tuple[str, int, int] | None:
    """The numbering under which the events after ``snapshot`` are named as its node would have named them
    (``StreamPosition.numbering``). Moved in from another node: the new generation's message 0 is the step
    after the snapshot's. Restored after a crash here: the messages go on in the snapshot's generation; None
    when that numbering is this run's own, or the snapshot names nothing (an earlier version's)."""
    if snapshot.event_numbering is None:
        return None
    named_epoch, named_generation, named_seq = snapshot.event_numbering
    if moved_in:
        return named_epoch, named_generation, named_seq + 1
    if (named_epoch, named_generation, named_seq) == (epoch, snapshot.generation, snapshot.seq):
        return None
    return named_epoch, named_generation, named_seq - snapshot.seq
