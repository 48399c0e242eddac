"""When the temporal stage stops waiting for the frames a dead embed worker took with it.

An embed worker that dies loses the frames it held (queued, waiting for a
batch, in the engine): gaps in their streams' sequences that nothing will
ever fill. A replay's reorder window would hold each such stream for its
whole timeout (60 s) before skipping the gap, so the temporal stage, told of
the death (``UpstreamLost``), gives those gaps up itself, at two moments:

* **the grace after the news** (:meth:`LostUpstream.sweep_due`): the frames
  the other embed workers had on their way have landed, so every gap open
  then is a loss;
* **a stream's first frame from the successor** (:meth:`LostUpstream.successor_frame`):
  a frame from the dead worker's index that arrives after the grace comes
  from the process that replaced it. A capture process sends a stream's
  frames in seq order, and those for one embed worker through one FIFO pipe
  that the successor takes over, so a frame of the stream still missing
  below the successor's first one went to the dead worker (lost) or to a
  survivor, which delivers in well under the restart's time: it is given up.

The second moment is the one a single embed worker needs (issue 18): every
frame behind its gap comes from the successor, which is up only after the
restart's backoff, a process start and a model load (0.6 s and more), so
when the grace ends no frame is held behind the gap yet, and the sweep finds
nothing to skip.

Pure logic: time is the monotonic ``now`` the caller passes in.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from pipeline.errors import ActionPipeError, check_seconds


class LostUpstreamConfigError(ActionPipeError, ValueError):
    """A grace that is not a finite number of seconds."""


@dataclass
class _Loss:
    at: float
    settled: set[Hashable] = field(default_factory=set)  # streams whose successor frame was seen


class LostUpstream:
    """Remembers which embed workers died and when; says when gaps they left are to be given up."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = check_seconds("grace_s", grace_s, LostUpstreamConfigError)
        self._losses: dict[int, _Loss] = {}
        self._sweep_at: float | None = None

    def lost(self, worker: int, now: float) -> None:
        """Embed worker ``worker`` (its index) died at ``now``."""
        self._losses[worker] = _Loss(now)  # a later death of the same index starts over
        self._sweep_at = now + self.grace_s

    def sweep_due(self, now: float) -> bool:
        """True once per death (the latest, when they overlap), when its grace is over: give up every gap open."""
        if self._sweep_at is None or now < self._sweep_at:
            return False
        self._sweep_at = None
        return True

    def successor_frame(self, stream: Hashable, worker: int, now: float) -> bool:
        """True when a frame of ``stream`` from ``worker``, arriving at ``now``, is the first that stream got from
        a dead worker's successor: its gaps below that frame's seq are to be given up."""
        loss = self._losses.get(worker)
        if loss is None or now < loss.at + self.grace_s or stream in loss.settled:
            return False
        loss.settled.add(stream)
        return True

    def forget(self, stream: Hashable) -> None:
        """``stream`` is gone (ended, or replaced by a newer generation): nothing of it is waited for again."""
        for loss in self._losses.values():
            loss.settled.discard(stream)
