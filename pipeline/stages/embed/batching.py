"""Dynamic batching across streams for the embed stage.

Items (frames of any stream) queue in arrival order. A batch is due when the
queue holds ``max_batch_size`` items, or when the oldest item has waited
``max_wait_s``: a busy pipeline sends full batches (throughput), a quiet one
sends what it has after a bounded wait (latency). Pure logic: the caller
passes the monotonic time ``now`` in, and uses :meth:`time_until_due` as the
timeout of its socket poll.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from pipeline.errors import ActionPipeError, check_seconds, check_whole

T = TypeVar("T")


class BatcherConfigError(ActionPipeError, ValueError):
    """A batcher parameter out of range."""


@dataclass(frozen=True)
class _Pending(Generic[T]):
    item: T
    arrived: float


class DynamicBatcher(Generic[T]):
    """FIFO queue that releases batches by size or by the age of its oldest item."""

    def __init__(self, max_batch_size: int, max_wait_s: float) -> None:
        self.max_batch_size = check_whole("max_batch_size", max_batch_size, 1, BatcherConfigError)
        self.max_wait_s = check_seconds("max_wait_s", max_wait_s, BatcherConfigError)
        self._queue: deque[_Pending[T]] = deque()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def add(self, item: T, now: float) -> None:
        """Queue ``item``, which arrived at ``now``."""
        self._queue.append(_Pending(item, now))

    def oldest_wait_s(self, now: float) -> float | None:
        """How long the oldest pending item has waited; None when empty."""
        if not self._queue:
            return None
        return now - self._queue[0].arrived

    def ready(self, now: float) -> bool:
        """True when a batch is due: the queue is full, or its oldest item has waited ``max_wait_s``."""
        if not self._queue:
            return False
        if len(self._queue) >= self.max_batch_size:
            return True
        return now - self._queue[0].arrived >= self.max_wait_s

    def take(self, now: float, size: int | None = None) -> list[T]:
        """The due batch (up to ``size`` items, default ``max_batch_size``, oldest first), or [] when none is due.

        Items beyond it stay queued; they keep their arrival times, so a
        backlog drains in full batches without waiting again.
        """
        if not self.ready(now):
            return []
        return self._pop(min(size or self.max_batch_size, self.max_batch_size))

    def time_until_due(self, now: float) -> float | None:
        """Seconds until :meth:`ready` turns true (0.0 if it is), or None when nothing is pending."""
        if not self._queue:
            return None
        if len(self._queue) >= self.max_batch_size:
            return 0.0
        return max(0.0, self._queue[0].arrived + self.max_wait_s - now)

    def flush(self) -> list[T]:
        """Everything pending, oldest first, regardless of size or age (shutdown / drain).

        May exceed ``max_batch_size``; a caller with a fixed engine batch limit
        splits it.
        """
        return self._pop(len(self._queue))

    def _pop(self, count: int) -> list[T]:
        return [self._queue.popleft().item for _ in range(min(count, len(self._queue)))]
