"""Per-stream reorder window for the temporal stage.

With several embed workers, frames of one stream can reach the temporal stage
out of order; the GRU must see them in sequence order. Each stream holds the
frames that arrived ahead of a gap and releases them, in strict seq order, as
soon as the gap fills. A gap never stalls a stream for long: it is skipped
(and reported as lost, so the caller counts ``reorder_timeout`` drops) once

* the missing frame has been overdue for ``timeout_s`` -- measured from the
  arrival of the earliest frame still held behind the gap, the moment we knew
  it was overdue; or
* more than ``window`` frames are held for the stream; or
* the caller knows its frames are gone (an embed worker died with them:
  :meth:`ReorderBuffer.skip_all_gaps`, :meth:`ReorderBuffer.give_up_before`).

A frame older than the next expected seq is rejected, never delivered:
``skipped`` when its gap was already skipped (it is counted in that Gap, so
the caller must not count it again), ``late`` otherwise (a duplicate of a
delivered frame, or older than the stream's first seq).

Sequence numbers: the capture stage numbers a stream's frames monotonically
across reconnects (seq never restarts), so a START frame only marks the reset
of model state and needs nothing from this buffer: strict seq order is enough.
A stream's first expected seq is ``first_seq`` (0: the capture stage numbers
every stream from 0, so the first frames may arrive swapped without loss);
with ``first_seq=None`` the first frame seen sets it instead.
:meth:`ReorderBuffer.start` exists for a producer that does restart numbering.

Pure logic: time is the monotonic ``now`` the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar, Union

from pipeline.errors import ActionPipeError, check_seconds, check_whole

T = TypeVar("T")

GapReason = Literal["timeout", "window", "flush", "lost"]
RejectReason = Literal["late", "skipped", "duplicate", "stream_ended"]
# Skipped ranges remembered per stream, to tell a skipped frame arriving late from a duplicate.
_SKIPPED_RANGES_KEPT = 64


class ReorderConfigError(ActionPipeError, ValueError):
    """A reorder buffer parameter out of range."""


@dataclass(frozen=True)
class Delivered(Generic[T]):
    """The next frame of ``stream``, in sequence order."""

    stream: str
    seq: int
    item: T


@dataclass(frozen=True)
class Gap:
    """``count`` frames from ``first_missing_seq`` on were skipped: lost upstream or too late."""

    stream: str
    first_missing_seq: int
    count: int
    reason: GapReason


@dataclass(frozen=True)
class Rejected(Generic[T]):
    """A frame that will not be delivered: behind the expected seq, a duplicate, or held when its stream ended."""

    stream: str
    seq: int
    item: T
    reason: RejectReason


Released = Union[Delivered[T], Gap, Rejected[T]]


@dataclass(frozen=True)
class _Held(Generic[T]):
    item: T
    arrived: float


@dataclass
class _StreamWindow(Generic[T]):
    expected: int
    held: dict[int, _Held[T]] = field(default_factory=dict)
    skipped: list[tuple[int, int]] = field(default_factory=list)  # [first, last] seqs of skipped gaps

    def was_skipped(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.skipped)

    def overdue_since(self) -> float | None:
        # The window holds at most `window` + 1 frames, so a scan is cheap.
        if not self.held:
            return None
        return min(h.arrived for h in self.held.values())


class ReorderBuffer(Generic[T]):
    """Releases each stream's frames in strict seq order; skips gaps after a timeout or on overflow."""

    def __init__(self, window: int, timeout_s: float, first_seq: int | None = None) -> None:
        self.window = check_whole("window", window, 0, ReorderConfigError, "frames held per stream")
        self.timeout_s = check_seconds("timeout_s", timeout_s, ReorderConfigError)
        self.first_seq = first_seq
        self._streams: dict[str, _StreamWindow[T]] = {}

    # -- queries ---------------------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)

    def held(self, stream: str | None = None) -> int:
        """Frames held behind gaps: for one stream, or all streams when ``stream`` is None."""
        if stream is not None:
            state = self._streams.get(stream)
            return len(state.held) if state else 0
        return sum(len(s.held) for s in self._streams.values())

    def expected_seq(self, stream: str) -> int | None:
        state = self._streams.get(stream)
        return state.expected if state else None

    def next_due_in(self, now: float) -> float | None:
        """Seconds until :meth:`expire` would skip a gap (0.0 if it would now); None when nothing is held."""
        due: float | None = None
        for state in self._streams.values():
            since = state.overdue_since()
            if since is not None:
                wait = max(0.0, since + self.timeout_s - now)
                due = wait if due is None else min(due, wait)
        return due

    # -- updates ---------------------------------------------------------------
    def push(self, stream: str, seq: int, item: T, now: float) -> list[Released[T]]:
        """Accept one frame; returns what it releases, in order (possibly nothing, or a rejection)."""
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _StreamWindow(expected=seq if self.first_seq is None else self.first_seq)
        if seq < state.expected:
            return [Rejected(stream, seq, item, "skipped" if state.was_skipped(seq) else "late")]
        if seq in state.held:
            # Keep the first copy: it may already be part of a contiguous run.
            return [Rejected(stream, seq, item, "duplicate")]
        if seq == state.expected:
            released: list[Released[T]] = [Delivered(stream, seq, item)]
            state.expected += 1
            released.extend(self._drain(stream, state))
            return released
        state.held[seq] = _Held(item, now)
        released = []
        while len(state.held) > self.window:
            released.extend(self._skip_gap(stream, state, "window"))
        return released

    def expire(self, now: float) -> list[Released[T]]:
        """Skip every gap that has been overdue for ``timeout_s``; returns the gaps and what they free."""
        released: list[Released[T]] = []
        for stream, state in self._streams.items():
            while (since := state.overdue_since()) is not None and now - since >= self.timeout_s:
                released.extend(self._skip_gap(stream, state, "timeout"))
        return released

    def skip_all_gaps(self, reason: GapReason = "lost") -> list[Released[T]]:
        """Skip every gap now (their frames are known to be gone); returns the gaps and what they free."""
        released: list[Released[T]] = []
        for stream, state in self._streams.items():
            while state.held:
                released.extend(self._skip_gap(stream, state, reason))
        return released

    def give_up_before(self, stream: str, seq: int, reason: GapReason = "lost") -> list[Released[T]]:
        """Skip the gaps of ``stream`` below ``seq`` now (their frames are known to be gone); frames held
        above ``seq`` stay behind any gap there. Returns the gaps and what they free."""
        state = self._streams.get(stream)
        released: list[Released[T]] = []
        while state is not None and state.expected < seq:
            released.extend(self._skip_gap(stream, state, reason, up_to=seq))
        return released

    def flush(self, stream: str) -> list[Released[T]]:
        """Deliver everything held for ``stream`` in order (gaps skipped), then forget the stream."""
        state = self._streams.get(stream)
        if state is None:
            return []
        released: list[Released[T]] = []
        while state.held:
            released.extend(self._skip_gap(stream, state, "flush"))
        del self._streams[stream]
        return released

    def start(self, stream: str, seq: int) -> list[Released[T]]:
        """Make ``seq`` the stream's next expected frame (for producers that restart numbering).

        Held frames older than ``seq`` are rejected as late; held frames from
        ``seq`` on stay, and any now contiguous are delivered.
        """
        state = self._streams.get(stream)
        if state is None:
            self._streams[stream] = _StreamWindow(expected=seq)
            return []
        released: list[Released[T]] = [
            Rejected(stream, s, state.held.pop(s).item, "late") for s in sorted(state.held) if s < seq
        ]
        state.expected = seq
        released.extend(self._drain(stream, state))
        return released

    def end(self, stream: str) -> list[Released[T]]:
        """Forget ``stream``; frames still held for it come back rejected (``stream_ended``)."""
        state = self._streams.pop(stream, None)
        if state is None:
            return []
        return [Rejected(stream, s, state.held[s].item, "stream_ended") for s in sorted(state.held)]

    # -- internals -------------------------------------------------------------
    def _drain(self, stream: str, state: _StreamWindow[T]) -> list[Released[T]]:
        released: list[Released[T]] = []
        while state.expected in state.held:
            released.append(Delivered(stream, state.expected, state.held.pop(state.expected).item))
            state.expected += 1
        return released

    def _skip_gap(self, stream: str, state: _StreamWindow[T], reason: GapReason,
                  up_to: int | None = None) -> list[Released[T]]:
        """Skip the gap before the first held frame (or before ``up_to``, if that comes first)."""
        next_held = min(state.held) if up_to is None else min([up_to, *state.held])
        gap = Gap(stream, state.expected, next_held - state.expected, reason)
        state.skipped.append((state.expected, next_held - 1))
        del state.skipped[:-_SKIPPED_RANGES_KEPT]
        state.expected = next_held
        return [gap, *self._drain(stream, state)]
