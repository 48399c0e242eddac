"""Continuing a stream from its snapshot in the temporal stage: loading it, deciding, and putting it back.

Two occasions (the ``origin`` label of ``actionpipe_state_restored_total``):

* ``crash``: this worker replaces one that died. At its start, before any
  frame, each stream the supervisor still runs is loaded from its snapshot,
  if that is usable and of the generation the stream is in now (a capture
  process replaced meanwhile starts the stream anew anyway). Its row and
  track are put back at once, its open actions made those its predecessor
  last reported (:meth:`ActionEventDetector.align_open_actions`), and they
  are not closed: the stream goes on where its snapshot was, and what it
  stepped after the snapshot is lost (logged as the gap at its first frame).
  Done at the start, not at each stream's first frame, so that this worker's
  first heartbeat already reports the open actions it continues: if it dies
  too, its own successor ends or continues exactly those.
* ``failover`` and ``move`` (cluster mode): the stream arrives from another
  node, lost or drained (``ResumeStream``); its snapshot is put back before
  its first frame, which continues it. After a failover its open actions are
  made those the lost node last reported; after a move the snapshot, taken
  at the stream's END on the old node, is exact.
* ``restart``: a new run with the same ``state.dir``. At the START (reason
  ``open``) of a live stream of the same name; its stream clock started
  again, so the track's times are moved to it, and the actions the previous
  run ended at its stop stay ended.

A snapshot that cannot be used is one log line (the file and why, or the
decision's reason) and a count in ``actionpipe_state_restore_refused_total``;
the stream starts a new sequence as it would have without one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from pipeline.events import TrackImportError
from pipeline.metrics import ORIGIN_GAUGE
from pipeline.state.restore import restore_decision
from pipeline.state.snapshot import RowShape, StreamSnapshot
from pipeline.state.snapshot_file import SnapshotFileError
from pipeline.state.store import SnapshotStore, StoreError

log = logging.getLogger(__name__)


ORIGIN_WORDS = {"crash": "after a crash", "restart": "from the previous run", "failover": "after its node was lost",
                "move": "moved from another node"}


def gap_line(snapshot: StreamSnapshot, seq: int, t: float) -> str:
    """What a log line says of the steps lost between a restored snapshot and the frame that continues it."""
    lost = max(0, seq - snapshot.seq - 1)
    return (f"stream {snapshot.stream}: continues at seq {seq} (t={t:.3f} s) from its snapshot at seq {snapshot.seq} "
            f"(t={snapshot.t:.3f} s): {lost} step(s), {max(0.0, t - snapshot.t):.2f} s of stream time, lost")


def restart_shift(snapshot: StreamSnapshot, t: float, now_wall: float) -> float:
    """How far to move a previous run's track times so that its last step lies as long before ``t``
    (this run's first step) as the snapshot is old (clock skew counted as no age)."""
    return t - max(0.0, now_wall - snapshot.wall_time) - snapshot.t


class StreamRestorer:
    """Loads streams' snapshots from ``store`` and decides whether each may be continued."""

    def __init__(self, store: SnapshotStore, head_id: str, backbone_id: str, max_age_s: float, row_shape: RowShape,
                 metrics=None, wall_clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.head_id = head_id
        self.backbone_id = backbone_id
        self.max_age_s = max_age_s
        self._row_shape = row_shape
        self._metrics = metrics
        self._wall = wall_clock

    def load(self, stream: str, generation: int | None = None) -> StreamSnapshot | None:
        """The stream's snapshot if it may be continued (of ``generation``, if given); None otherwise,
        a refusal logged and counted."""
        try:
            snapshot = self._store.load(stream, expect=self._row_shape)
        except SnapshotFileError as exc:
            self._refuse(stream, exc.reason, str(exc))
            return None
        except (StoreError, OSError) as exc:
            self._refuse(stream, "unreadable", f"its snapshot cannot be read: {exc}")
            return None
        if snapshot is None:
            return None
        decision = restore_decision(snapshot, self._wall(), self.max_age_s, self.head_id, self.backbone_id)
        if not decision:
            self._refuse(stream, decision.reason, decision.detail)
            return None
        if generation is not None and snapshot.generation != generation:
            self._refuse(stream, "other_generation", f"stream {stream!r}: the snapshot is of generation "
                         f"{snapshot.generation}, the stream is in generation {generation} now (a new capture process)")
            return None
        return snapshot

    def put_back(self, snapshot: StreamSnapshot, table, detector, now: float, origin: str,
                 open_actions: Mapping[str, float] | None, shift: float = 0.0) -> bool:
        """Make ``snapshot`` the stream's state in ``table`` (monotonic ``now``) and ``detector``, its
        open actions ``open_actions`` (None: the snapshot's) and its times moved by ``shift``; counted and logged. False when
        its track does not fit (refused). The table's ``StateTableFull`` is the caller's."""
        stream = snapshot.stream
        table.import_stream(stream, snapshot.row, now)
        try:
            detector.import_track(stream, snapshot.track)
        except TrackImportError as exc:
            table.release(stream)
            self._refuse(stream, "malformed", str(exc))
            return False
        detector.shift_times(stream, shift)
        if open_actions is not None:
            detector.align_open_actions(stream, open_actions)
        else:
            open_actions = detector.open_actions(stream)
        age = max(0.0, self._wall() - snapshot.wall_time)
        if self._metrics:
            self._metrics.state_restored.labels(stream, origin).inc()
            self._metrics.state_restored_age.labels(origin).observe(age)
            self._metrics.state_origin.labels(stream).set(ORIGIN_GAUGE[origin])
        log.info("temporal: stream %s: state restored (%s) from its snapshot at seq %d of generation %d "
                 "(t=%.3f s), taken %.1f s ago%s", stream, ORIGIN_WORDS[origin], snapshot.seq, snapshot.generation,
                 snapshot.t, age,
                 f"; open actions: {', '.join(sorted(open_actions))}" if open_actions else "")
        return True

    def _refuse(self, stream: str, reason: str, detail: str) -> None:
        if self._metrics:
            self._metrics.state_restore_refused.labels(stream, reason).inc()
        log.warning("temporal: stream %s: not restored (%s): %s; it starts a new sequence", stream, reason, detail)
