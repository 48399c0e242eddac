"""Stop signals as operators and their tools send them: one request may arrive more than once.

``timeout -s TERM``, ``systemctl stop`` with ``KillMode=control-group`` and
shell scripts that ``kill`` a child and then its group all deliver the same
stop twice within milliseconds: once to the main process, once to the whole
process group. Counting those as two requests turned a drain into a stop
without draining. So a second SIGTERM, SIGINT or SIGHUP within
``supervision.double_signal_window_s`` of the first is the same request; one
that comes later is an operator insisting, and stops at once.

:class:`StopSignals` decides, free of I/O and with an injected clock; the
handler (:func:`install_signal_handlers`) only records, and the supervisor's
loop acts and logs (a signal handler that logs could interleave with a log
line the interrupted code was writing).
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Callable
from enum import Enum

# SIGHUP drains like SIGTERM: a closed terminal or a service manager's hang-up means "stop", and the
# pipeline offers no reload for it to mean anything else.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopDecision(Enum):
    DRAIN = "drain"  # the first request: stop reading, process what was read
    SAME_REQUEST = "same_request"  # the first one again (the main process, then its group)
    STOP_NOW = "stop_now"  # an operator asking again after the window: stop without draining


class StopSignals:
    """What each stop signal means, given when the first one came."""

    def __init__(self, window_s: float, clock: Callable[[], float]) -> None:
        self.window_s = window_s
        self._clock = clock
        self._first_at: float | None = None

    def decide(self) -> StopDecision:
        now = self._clock()
        if self._first_at is None:
            self._first_at = now
            return StopDecision.DRAIN
        # Measured from the first signal, not the latest: a stream of repeats cannot keep postponing a stop.
        if now - self._first_at <= self.window_s:
            return StopDecision.SAME_REQUEST
        return StopDecision.STOP_NOW


class SignalInbox:
    """Signals received and what they were decided to mean, for the loop to act on and log.

    A deque's append and popleft are atomic, so the handler (main thread, between bytecodes) and the
    loop never need a lock, which a handler could deadlock on."""

    def __init__(self, decisions: StopSignals) -> None:
        self._decisions = decisions
        self._received: collections.deque[tuple[str, StopDecision]] = collections.deque()

    def on_signal(self, signum: int, _frame=None) -> None:
        self._received.append((signal.Signals(signum).name, self._decisions.decide()))

    def take(self) -> list[tuple[str, StopDecision]]:
        taken = []
        while self._received:
            taken.append(self._received.popleft())
        return taken


def install_signal_handlers(inbox: SignalInbox) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, inbox.on_signal)
