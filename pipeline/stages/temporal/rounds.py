"""When the temporal worker steps: in rounds that take every ready stream together.

A GRU step costs about as much for one stream as for a dozen (the weights are read once per call,
for every row), so streams whose frames arrive at their own moments are better stepped together
than one by one. A round opens when the first stream becomes ready and is stepped once every
stream that holds state is ready, the round is full, or it has been open ``wait_s``; a stream ready
while a round was being stepped (a backlog) opens the next one at once. A round waits only while
streams become ready often enough that ``min_expected`` more are expected within ``wait_s`` (measured
over the last second): with few streams waiting would cost latency and save nothing. While a round
is open the worker does not wake for each arrival: it sleeps until the round is due and takes what
came meanwhile in one gulp (a wake-up per message cost more CPU than the message), so a round
closes early only when its streams came together, as an embed worker's batch does. Pure logic:
the caller passes the time in.
"""

from __future__ import annotations

from collections import deque

from pipeline.errors import ActionPipeError, check_seconds

RATE_WINDOW_S = 1.0


class RoundPolicyError(ActionPipeError, ValueError):
    """A round parameter out of range."""


class RoundPolicy:
    """Decides when the ready streams are stepped."""

    def __init__(self, wait_s: float, max_streams: int, min_expected: float = 2.0) -> None:
        self.wait_s = check_seconds("wait_s", wait_s, RoundPolicyError)
        if max_streams < 1:
            raise RoundPolicyError(f"max_streams must be at least 1, got {max_streams}")
        if min_expected < 0:
            raise RoundPolicyError(f"min_expected must not be negative, got {min_expected}")
        self.max_streams = max_streams
        self.min_expected = min_expected
        self._opened: float | None = None
        self._arrivals: deque[float] = deque()

    def ready(self, now: float) -> None:
        """A stream became ready at ``now``: it opens the round if none is open."""
        if self._opened is None:
            self._opened = now
        self._arrivals.append(now)

    def expected_within_wait(self, now: float) -> float:
        """Streams expected to become ready within ``wait_s``, at the rate of the last second."""
        while self._arrivals and self._arrivals[0] < now - RATE_WINDOW_S:
            self._arrivals.popleft()
        return len(self._arrivals) / RATE_WINDOW_S * self.wait_s

    def due_in(self, ready_streams: int, active_streams: int, now: float) -> float | None:
        """Seconds until the round is due (0.0: step now), or None when no stream is ready."""
        if ready_streams == 0 or self._opened is None:
            return None
        if ready_streams >= min(self.max_streams, max(active_streams, 1)):
            return 0.0  # everyone it could wait for is here, or the round is full
        if self.expected_within_wait(now) < self.min_expected:
            return 0.0  # too few streams to gather: waiting would only add latency
        return max(0.0, self._opened + self.wait_s - now)

    def stepped(self, still_ready: int, now: float) -> None:
        """A round was stepped at ``now``; ``still_ready`` streams have more waiting (their next round is due now)."""
        self._opened = (now - self.wait_s) if still_ready else None
