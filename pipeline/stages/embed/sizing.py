"""How many frames the embed worker's next engine call takes: what is waiting, and what each batch
size has been measured to cost here.

The engine is called as soon as it is free, with at most what is waiting: at low load a frame
leaves at once, and under load the queue that builds while the engine runs becomes the next
batch. Among the sizes that many frames allow, the call takes the one with the lowest measured
seconds per frame, measured in this pipeline, beside the decoders whose cores and caches the
engine shares (on a CPU a big batch can cost more per frame than a small one; a GPU wants many).
A size not measured yet, or not for ``refresh_s``, is tried when the queue allows it, so the
table follows the load. Pure logic: the caller passes the time in and reports what each call took.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ActionPipeError, check_seconds, check_whole


class BatchSizerConfigError(ActionPipeError, ValueError):
    """A batch sizer parameter out of range."""


@dataclass
class _Cost:
    per_frame_s: float  # smoothed over the calls of this size
    calls: int
    measured_at: float


@dataclass(frozen=True)
class SizeCost:
    """What the sizer believes one batch size costs (a row of its table, for metrics and logs)."""

    size: int
    per_frame_s: float
    calls: int


class BatchSizer:
    """Picks each engine call's batch size from the frames waiting and the measured cost per frame of each size."""

    def __init__(self, max_batch_size: int, *, trial_calls: int = 3, refresh_s: float = 30.0,
                 smoothing: float = 0.2) -> None:
        self.max_batch_size = check_whole("max_batch_size", max_batch_size, 1, BatchSizerConfigError)
        # A size's first call pays for the engine's set-up of that shape: it is not counted, and the
        # next ``trial_calls`` are measured before the size competes with the others.
        self.trial_calls = check_whole("trial_calls", trial_calls, 1, BatchSizerConfigError)
        self.refresh_s = check_seconds("refresh_s", refresh_s, BatchSizerConfigError)
        if not 0.0 < smoothing <= 1.0:
            raise BatchSizerConfigError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self._costs: dict[int, _Cost] = {}
        self._first_calls: set[int] = set()

    def choose(self, waiting: int, now: float) -> int:
        """The next call's batch size for ``waiting`` frames (0 when none wait)."""
        if waiting <= 0:
            return 0
        top = min(waiting, self.max_batch_size)
        # The largest size still on trial goes first: it is the one a long queue is most likely to allow
        # only rarely. Sizes are tried only with frames that are waiting anyway: no call waits for more.
        for size in range(top, 0, -1):
            cost = self._costs.get(size)
            if cost is None or cost.calls < self.trial_calls or now - cost.measured_at > self.refresh_s:
                return size
        return min(range(1, top + 1), key=lambda size: (self._costs[size].per_frame_s, -size))

    def record(self, size: int, seconds: float, now: float) -> None:
        """A call of ``size`` frames took ``seconds`` at ``now``."""
        if size < 1 or size > self.max_batch_size:
            raise BatchSizerConfigError(f"batch size {size} is outside 1..{self.max_batch_size}")
        if size not in self._first_calls:
            self._first_calls.add(size)
            return
        per_frame = max(0.0, seconds) / size
        cost = self._costs.get(size)
        if cost is None:
            self._costs[size] = _Cost(per_frame, 1, now)
            return
        # Trial calls are averaged evenly; after that the estimate follows the load.
        weight = max(self.smoothing, 1.0 / (cost.calls + 1))
        cost.per_frame_s += weight * (per_frame - cost.per_frame_s)
        cost.calls += 1
        cost.measured_at = now

    def table(self) -> list[SizeCost]:
        """The measured sizes and their cost per frame, smallest size first."""
        return [SizeCost(size, c.per_frame_s, c.calls) for size, c in sorted(self._costs.items())]
