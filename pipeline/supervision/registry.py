"""The supervisor's table of streams: the one owner of which streams exist, which
capture worker serves each, its generation and its last reported state.

Capture workers own each stream's state machine and report its changes; the
table records them. Adding refuses a name already in use or a stream beyond
the temporal stage's capacity and changes nothing then; removing asks the
stream's capture worker to end it. A stream's generation goes up each time
it is handed to a (new) capture process, and never goes back, not even when
a stream of the same name is added again later. Pure logic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import SourceConfig
from pipeline.errors import ActionPipeError
from pipeline.sources.lifecycle import StreamState


class StreamRequestError(ActionPipeError, ValueError):
    """A request about streams that cannot be carried out; ``code`` says which kind."""

    code = "invalid"


class DuplicateStreamError(StreamRequestError):
    code = "duplicate"


class CapacityError(StreamRequestError):
    code = "capacity"


class UnknownStreamError(StreamRequestError):
    code = "unknown"


@dataclass(frozen=True)
class ResumeRequest:
    """A stream that comes from another node (cluster mode): ``origin`` ``failover`` (its node was lost)
    or ``move`` (its node is drained); what that node last reported of it."""

    origin: str
    open_actions: dict[str, float] = field(default_factory=dict)
    last_t: float | None = None  # its last step there (a replay without a usable snapshot continues after it)

    def __post_init__(self) -> None:
        if self.origin not in ("failover", "move"):
            raise StreamRequestError(f"a stream resumes after a failover or a move, not {self.origin!r}")


@dataclass
class StreamEntry:
    name: str
    source: SourceConfig = field(repr=False)  # its URI may hold credentials
    live: bool
    generation: int
    worker: str | None = None
    delivered: bool = False  # the worker's current process was told to serve it
    state: str = StreamState.CONNECTING.value
    reason: str = "starting"
    error: str = ""
    last_t: float | None = None
    last_t_at: float | None = None  # the supervisor's monotonic time when last_t was reported
    resume_after_t: float | None = None
    start_reason: str = "open"
    removing: bool = False
    # Cluster mode: arriving from another node, it waits for the temporal worker to put its snapshot back...
    resume: ResumeRequest | None = None
    awaiting_resume: bool = False
    start_t: float | None = None  # ...and a live one's time continues from its snapshot's
    # Leaving for another node: asked to end (reason moved), then told where its state was left.
    moving_since: float | None = None
    moved: dict | None = None

    @property
    def finished(self) -> bool:
        return self.state in (StreamState.ENDED.value, StreamState.FAILED.value)


class StreamTable:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: dict[str, StreamEntry] = {}
        self._generations: dict[str, int] = {}

    # -- queries ---------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> StreamEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownStreamError(f"no stream named {name!r}") from None

    def entries(self) -> list[StreamEntry]:
        return list(self._entries.values())

    def active(self) -> list[StreamEntry]:
        return [e for e in self._entries.values() if not e.finished]

    def served_by(self, worker: str) -> list[StreamEntry]:
        return [e for e in self._entries.values() if e.worker == worker and not e.finished]

    @property
    def all_finished(self) -> bool:
        return all(e.finished for e in self._entries.values())

    # -- changes -----------------------------------------------------------------
    def add(self, name: str, source: SourceConfig, live: bool, workers: list[str],
            resume: ResumeRequest | None = None) -> StreamEntry:
        """A new stream on the least loaded of ``workers``; nothing changes when it is refused. ``resume``:
        it continues from its snapshot, once the temporal worker has put that back (``resumed``)."""
        existing = self._entries.get(name)
        if existing is not None and not existing.finished:
            raise DuplicateStreamError(f"a stream named {name!r} already exists ({existing.state}); remove it first or choose another name")
        if len(self.active()) >= self.capacity:
            raise CapacityError(
                f"the pipeline holds {self.capacity} streams at once (temporal.capacity) and all are in use"
            )
        if not workers:
            raise StreamRequestError("no capture worker is configured")
        load = {w: len(self.served_by(w)) for w in workers}
        worker = min(workers, key=lambda w: (load[w], workers.index(w)))
        generation = self._generations.get(name, -1) + 1
        self._generations[name] = generation
        entry = StreamEntry(name, source, live, generation, worker, resume=resume, awaiting_resume=resume is not None)
        self._entries[name] = entry
        return entry

    def resumed(self, name: str, generation: int, restored: bool, t: float | None, age_s: float) -> StreamEntry | None:
        """The temporal worker put a resuming stream's snapshot back (``restored``, taken at stream time ``t``,
        ``age_s`` ago) or gave up on it: its capture may start it now. A replay reads on after ``t`` (or,
        not restored, after its last step on the other node) on the same step grid; a live stream's time
        goes on from ``t`` plus the snapshot's age. None for an answer about another generation."""
        entry = self._entries.get(name)
        if entry is None or entry.generation != generation or not entry.awaiting_resume or entry.resume is None:
            return None
        entry.awaiting_resume = False
        entry.start_reason = entry.resume.origin
        if entry.live:
            entry.start_t = t + age_s if restored and t is not None else None
        else:
            entry.resume_after_t = t if restored else entry.resume.last_t
        return entry

    def moving(self, name: str, now: float) -> StreamEntry:
        """Ask for ``name`` to leave for another node (its capture ends it, reason ``moved``)."""
        entry = self.mark_removing(name)
        entry.moving_since = now
        return entry

    def moved_out(self, name: str, generation: int, snapshotted: bool, seq: int, t: float | None) -> StreamEntry | None:
        """The temporal worker reports where a moving stream's state was left (its snapshot, or none)."""
        entry = self._entries.get(name)
        if entry is None or entry.generation != generation or entry.moving_since is None:
            return None
        entry.moved = {"snapshot": snapshotted, "seq": seq, "t": t}
        entry.state, entry.reason = StreamState.ENDED.value, "moved"
        return entry

    def record(self, name: str, generation: int, state: str, reason: str, error: str = "") -> StreamEntry | None:
        """A state change reported by a capture worker; reports of a superseded generation are ignored."""
        entry = self._entries.get(name)
        if entry is None or generation != entry.generation:
            return None
        entry.state, entry.reason = state, reason
        if error or state == StreamState.LIVE.value:
            entry.error = error
        if entry.removing and entry.finished:
            # However its capture worker phrased the end, it was asked for.
            entry.reason = "moved" if entry.moving_since is not None else "removed"
        return entry

    def progress(self, name: str, generation: int, last_t: float | None, now: float) -> None:
        entry = self._entries.get(name)
        if entry is not None and generation == entry.generation and last_t is not None:
            entry.last_t, entry.last_t_at = last_t, now

    @staticmethod
    def start_time(entry: StreamEntry, now: float) -> float | None:
        """Where a live stream's time resumes in a new capture process: after every step the dead one
        may have sent (it ran at most until now), so stream time never goes back."""
        if not entry.live or entry.last_t is None or entry.last_t_at is None:
            return None
        return entry.last_t + max(0.0, now - entry.last_t_at)

    def reassign(self, worker: str) -> list[StreamEntry]:
        """``worker``'s process died: its unfinished streams start a new generation on its successor."""
        moved = []
        for entry in self.served_by(worker):
            entry.generation = self._generations[entry.name] = self._generations[entry.name] + 1
            entry.delivered = False
            entry.start_reason = "restart"
            entry.resume_after_t = None if entry.live else entry.last_t
            if entry.removing:
                entry.state, entry.reason = StreamState.ENDED.value, "removed"
                continue
            entry.state, entry.reason = StreamState.CONNECTING.value, "capture_restart"
            moved.append(entry)
        return moved

    def rewind(self, name: str, generation: int, t: float) -> StreamEntry | None:
        """A replay the temporal worker restored from its snapshot (of ``generation``, at stream time ``t``)
        after a crash: its capture worker reads it again after ``t``, in a new generation. None (nothing
        changes) for a stream that is live, finished, being removed or already in another generation."""
        entry = self._entries.get(name)
        if entry is None or entry.live or entry.finished or entry.removing or entry.generation != generation:
            return None
        entry.generation = self._generations[name] = self._generations[name] + 1
        entry.delivered = False
        entry.start_reason = "rewind"
        entry.resume_after_t = entry.last_t = t
        return entry

    def rewound(self, loop: bool) -> tuple[str, ...]:
        """The streams a restarted temporal worker may have read again from their snapshots: running
        replays (a loop restarts its file at a resume, so looping replays are not rewound)."""
        return () if loop else tuple(sorted(e.name for e in self.active() if not e.live and not e.removing))

    def mark_removing(self, name: str) -> StreamEntry:
        entry = self.get(name)
        if entry.finished:
            raise UnknownStreamError(f"stream {name!r} has already {entry.state}")
        entry.removing = True
        return entry

    def end(self, name: str, reason: str) -> None:
        """End a stream no capture process serves (nothing to wait for)."""
        entry = self.get(name)
        entry.state, entry.reason = StreamState.ENDED.value, reason

    def end_served_by(self, worker: str, reason: str) -> None:
        """``worker``'s process died while the run stops: its streams end here."""
        for entry in self.served_by(worker):
            entry.state, entry.reason = StreamState.ENDED.value, reason

    def fail_served_by(self, worker: str, reason: str, error: str) -> None:
        """``worker`` is given up on: its streams fail."""
        for entry in self.served_by(worker):
            entry.state, entry.reason, entry.error = StreamState.FAILED.value, reason, error

    def finish_all(self, reason: str) -> None:
        """The run is over: streams still marked running end with ``reason``."""
        for entry in self.active():
            entry.state, entry.reason = StreamState.ENDED.value, reason
