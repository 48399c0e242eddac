"""The temporal stage's snapshots of its streams: taken on its own thread, written on another.

Every ``state.snapshot_interval_s`` the worker copies the rows of the streams
that stepped since their last snapshot off the table (one gather), with
their event tracks and positions (:class:`StreamSnapshots`); that is about
0.1 ms a stream. Encoding and writing the files (a few ms a stream with
fsync) is the :class:`SnapshotWriter` thread's: on the temporal thread it
would cost a saturated stage more than a tenth of its steps.

When a stream ends:

* at a drained stop (END ``stopped``), its last state is snapshotted before
  its row and track are freed, and the worker's end (:meth:`StreamSnapshots.close`)
  waits until every snapshot is written: that is what a new run with the
  same ``state.dir`` continues;
* for any other END (end of file, removed, failed, a reconnect or a loop:
  the sequence is over) its snapshot is removed, so that nobody continues a
  sequence that ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from pipeline.errors import ActionPipeError
from pipeline.state.snapshot import StreamSnapshot
from pipeline.state.snapshot_file import SnapshotFileError
from pipeline.state.store import SnapshotStore, StoreError

log = logging.getLogger(__name__)

# How long a drained stop waits for the writer to finish (a few ms a stream; a hung disk is not waited out).
CLOSE_TIMEOUT_S = 30.0


class SnapshotWriterFailed(ActionPipeError, RuntimeError):
    """The writer thread stopped on an unexpected error: no snapshot would be written any more."""

    restart_helps = True


class Position(Protocol):
    """Where a stream is: what the worker keeps per stream (``durable.StreamPosition``)."""

    generation: int
    last_seq: int
    last_t: float | None


class SnapshotWriter:
    """A thread that saves snapshots to ``store``, the newest of each stream.

    Pending work is one entry per stream, not a queue: when the writer falls behind (a slow or
    hung disk), a newer snapshot of a stream replaces the one still waiting, so memory stays
    bounded by the number of streams and only the newest state, the one worth continuing, is
    written. ``forget`` queues the removal of a stream's snapshot the same way, in order with its
    saves."""

    def __init__(self, store: SnapshotStore, metrics=None, durable: bool = False) -> None:
        # durable (state.dir): a drained stop's snapshots are fsynced, to outlive a power cut before the next
        # run. The periodic ones are not: fsyncing 100 files a second costs a busy temporal stage about a
        # tenth of its steps (python -m tools.benchmark_state --load), and after a power cut the next run
        # comes up later than state.max_age_s anyway, so a periodic snapshot would be refused as too old.
        self.durable = durable
        self._store = store
        self._metrics = metrics
        # None: remove the stream's snapshot; True: a drained stop's, fsynced when the store is durable.
        self._pending: dict[str, tuple[StreamSnapshot | None, bool]] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._failing: set[str] = set()  # streams whose last write failed (logged once until one succeeds)
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def put(self, snapshots: Iterable[StreamSnapshot], final: bool = False) -> None:
        with self._cond:
            for snapshot in snapshots:
                self._pending[snapshot.stream] = (snapshot, final)
            self._cond.notify()

    def forget(self, stream: str) -> None:
        with self._cond:
            self._pending[stream] = (None, False)
            self._cond.notify()

    def wait_idle(self, timeout_s: float) -> bool:
        """Until everything put so far is written (True), or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._pending or self._busy) and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        self.check()
        return True

    def abandon(self, timeout_s: float = 1.0) -> None:
        """Stop the thread, dropping what is pending (a fenced stage must not write state others own now)."""
        with self._cond:
            self._pending.clear()
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is pending, then stop the thread; raises what stopped it, if anything did."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("temporal: the snapshot writer did not finish within %.0f s (a hung disk?); the snapshots "
                      "still pending are not written", timeout_s)
        self.check()

    def check(self) -> None:
        """Raise, on the caller's thread, the error that stopped the writer: a writer that stopped
        must not pass for one that writes."""
        if self.failure is not None:
            raise SnapshotWriterFailed(f"the snapshot writer stopped: {self.failure!r}") from self.failure

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch, self._pending = self._pending, {}
                    self._busy = True
                for stream, (snapshot, final) in batch.items():
                    self._write(stream, snapshot, final)
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        except BaseException as exc:  # kept for check(), which raises it on the temporal thread
            self.failure = exc
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, stream: str, snapshot: StreamSnapshot | None, final: bool) -> None:
        try:
            if snapshot is None:
                self._store.remove(stream)
                return
            self._store.save(snapshot, fsync=self.durable and final)
        except (SnapshotFileError, StoreError, OSError) as exc:
            # The stream's previous snapshot stays (writes are atomic). Counted each time; logged when a
            # stream starts failing and when it recovers: a full disk must not log every stream every second.
            if self._metrics:
                self._metrics.state_snapshot_errors.labels(stream).inc()
            if stream not in self._failing:
                self._failing.add(stream)
                log.warning("temporal: stream %s: its snapshot cannot be written (%s); its previous one stays, "
                            "and this is said again only once it is written again", stream, exc)
            return
        if self._metrics:
            self._metrics.state_snapshots_saved.inc()
            self._metrics.state_snapshot_time.labels(stream).set(snapshot.wall_time)
        if stream in self._failing:
            self._failing.discard(stream)
            log.info("temporal: stream %s: its snapshot is written again", stream)


class StreamSnapshots:
    """Which streams need a snapshot and when (monotonic ``now`` passed in), and taking them.

    ``table`` is the worker's ``StreamStateTable``, ``detector`` its ``ActionEventDetector``;
    ``where(stream)`` is the stream's position (generation, last message number and time stepped)."""

    def __init__(self, writer: SnapshotWriter, head_id: str, backbone_id: str, interval_s: float, now: float,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._writer = writer
        self.head_id = head_id
        self.backbone_id = backbone_id
        self.interval_s = interval_s
        self._wall = wall_clock
        self._dirty: set[str] = set()
        self._next_at = now + interval_s
        self.epoch = ""  # the worker's, which names its events (set by the worker)

    def stepped(self, stream: str) -> None:
        self._dirty.add(stream)

    def tick(self, now: float, table, detector, where: Callable[[str], Position | None]) -> int:
        """Snapshot the streams that stepped, if ``snapshot_interval_s`` has passed; how many were."""
        if now < self._next_at:
            return 0
        self._writer.check()
        self._next_at = now + self.interval_s
        streams, self._dirty = self._dirty, set()
        return self.take(streams, table, detector, where)

    def take(self, streams: Iterable[str], table, detector, where: Callable[[str], Position | None],
             final: bool = False) -> int:
        """Snapshot ``streams`` now (those holding a row and a stepped position), for the writer;
        ``final``: a drained stop's, the one the next run continues."""
        held = set(table.active_streams)
        chosen = sorted(s for s in streams if s in held and (p := where(s)) is not None and p.last_seq >= 0
                        and p.last_t is not None)
        if not chosen:
            return 0
        rows = table.export_streams(chosen)
        wall = self._wall()
        snapshots = []
        for stream in chosen:
            position = where(stream)
            snapshots.append(StreamSnapshot(
                stream=stream, generation=position.generation, seq=position.last_seq, t=float(position.last_t),
                wall_time=wall, head_id=self.head_id, backbone_id=self.backbone_id, row=rows[stream],
                track=detector.export_track(stream), event_numbering=_event_numbering(
                    position, self.epoch)))
            self._dirty.discard(stream)
        self._writer.put(snapshots, final)
        return len(snapshots)

    def forget(self, stream: str) -> None:
        self._dirty.discard(stream)
        self._writer.forget(stream)

    def abandon(self) -> None:
        """Orphaned: write nothing more, not even what is pending (see ``SnapshotWriter.abandon``)."""
        self._dirty.clear()
        self._writer.abandon()

    def wait_written(self, timeout_s: float) -> bool:
        """Until every snapshot taken so far is written (True), or ``timeout_s`` passed (False)."""
        return self._writer.wait_idle(timeout_s)

    def close(self, table, detector, where: Callable[[str], Position | None]) -> None:
        """A drained stop: snapshot what stepped since the last round and still holds a row (its END
        never came), then wait until every snapshot is written."""
        streams, self._dirty = self._dirty, set()
        self.take(streams, table, detector, where, final=True)
        self._writer.close()


def _event_numbering(position, epoch: str) -> tuple[str, int, int] | None:
    """How the events of ``position``'s last step are named (None where the worker set no epoch)."""
    if not epoch:
        return None
    if hasattr(position, "event_name"):  # StreamPosition; a bare Position is named by its own numbers
        return position.event_name(epoch, position.generation, position.last_seq)
    return epoch, position.generation, position.last_seq
