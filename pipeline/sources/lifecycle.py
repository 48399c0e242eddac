"""One stream's life as an explicit state machine: connecting, live,
reconnecting, ended, failed. Pure logic: the caller passes the monotonic
time in and carries out what :meth:`StreamStateMachine.next_action` asks.

::

    connecting --opened--> live --source ended / read failed / stale--> reconnecting --opened--> live
        |  ^                 |                                              |
        |  +--open failed----+-(retry after backoff, live sources only)-----+
        |
        +--(permanent error, attempts used up, or a recorded source)--> failed
    live --end of file--> ended        any --stop / remove--> ended

Live sources (cameras, network streams) never end on their own: a drop, a
stall or a failed open is retried with exponential backoff and jitter, until
``max_attempts`` consecutive failed opens (``None``: forever) or an error
that retrying cannot fix (a malformed URL: nothing a server answers is
final, a relay answers 404 until its camera is back). An answer that
usually needs a person (401, 403, 404) is retried every ``slow_s`` with the
reason ``needs_attention``. Recorded sources (files, image folders) are
opened once: failing to open fails the stream, the end of the file ends it.

Flapping: a source counts as recovered only once it has delivered frames
for ``stable_s`` after an open; until then the backoff goes on growing. A
source that drops again before that (twice in a row without a stable spell) is ``flapping``: it stays
``reconnecting`` (reason ``flapping``, the count in its error) through its
reopens, and is ``live`` again only once it has been stable for
``stable_s``. So a server that sends one frame per connection is knocked
on less and less often, and never shows as live.

Every change of state is returned as a :class:`Transition`; the caller logs
it (naming the stream) and reports it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum

from pipeline.backoff import Backoff
from pipeline.errors import ActionPipeError


class StreamState(str, Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (StreamState.ENDED, StreamState.FAILED)


STATES = tuple(s.value for s in StreamState)


class Action(str, Enum):
    OPEN = "open"  # open the source now
    WAIT = "wait"  # nothing to do until ``until``
    READ = "read"  # read frames
    DONE = "done"  # the stream is over


@dataclass(frozen=True)
class Step:
    action: Action
    until: float | None = None  # for WAIT: the monotonic time of the next attempt


@dataclass(frozen=True)
class Transition:
    stream: str
    before: StreamState
    after: StreamState
    reason: str
    at: float
    error: str = ""
    retry_in_s: float | None = None
    attempt: int = 0


class IllegalTransition(ActionPipeError, RuntimeError):
    """An event that cannot happen in the stream's current state (a bug in the caller)."""

    restart_helps = True


@dataclass(frozen=True)
class ReconnectPolicy:
    backoff: Backoff = Backoff()
    max_attempts: int | None = None  # consecutive failed opens before giving up; None: never
    stale_after_s: float = 5.0  # a live stream with no frame for this long is reconnected
    stable_s: float = 10.0  # frames for this long after an open before the backoff starts over
    slow_s: float = 60.0  # the wait between attempts while the server answers what needs a person

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts}")
        for name in ("stale_after_s", "stable_s", "slow_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")


class StreamStateMachine:
    """Owns one stream's state; decides when to open, retry, give up or stop."""

    def __init__(self, stream: str, live: bool, policy: ReconnectPolicy, rng: random.Random, now: float) -> None:
        self.stream = stream
        self.live = live
        self.policy = policy
        self._rng = rng
        self.state = StreamState.CONNECTING
        self.attempts = 0  # failures (drops and failed opens) since the source was last stable: the backoff
        self.failed_opens = 0  # consecutive failed opens since the last good frame: what max_attempts limits
        self.flaps = 0  # drops in a row that came before the source was stable again
        self.reconnects = 0  # times the stream dropped and was reconnected
        self.connected = False  # opened and being read (live, or reconnecting while it proves itself)
        self.retry_at: float | None = now  # the first open is due at once
        self.last_frame_at: float | None = None
        self.last_error = ""
        self.reason = "starting"
        self._frames_since_open = 0
        self._opened_at = now
        self._drops_since_stable = 0

    # -- queries ---------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.state.finished

    def next_action(self, now: float) -> Step:
        if self.state.finished:
            return Step(Action.DONE)
        if self.connected:
            return Step(Action.READ)
        if self.retry_at is None or now >= self.retry_at:
            return Step(Action.OPEN)
        return Step(Action.WAIT, self.retry_at)

    def is_stale(self, now: float) -> bool:
        """A live stream that has not delivered a frame for ``stale_after_s``."""
        if not self.connected or not self.live:
            return False
        since = self.last_frame_at if self.last_frame_at is not None else self._opened_at
        return now - since >= self.policy.stale_after_s

    # -- events ----------------------------------------------------------------
    def opened(self, now: float) -> Transition | None:
        """The source opened. A flapping one stays reconnecting until it proves stable (None: no change)."""
        self._require(StreamState.CONNECTING, StreamState.RECONNECTING, event="opened")
        if self.connected:
            raise IllegalTransition(f"stream {self.stream}: opened twice without a drop")
        self.connected = True
        self._opened_at = now
        self._frames_since_open = 0
        self.last_frame_at = None  # staleness counts from this open, not the previous connection
        self.retry_at = None
        if self.flaps:
            return None
        return self._move(StreamState.LIVE, "opened", now)

    def frame(self, now: float) -> Transition | None:
        """A frame arrived. The first after an open proves the source opens; ``stable_s`` of them after an
        open prove it works: the backoff starts over, and a flapping stream is live again."""
        if not self.connected:
            raise IllegalTransition(f"stream {self.stream}: a frame arrived while {self.state.value} and not open")
        self.last_frame_at = now
        self._frames_since_open += 1
        if self._frames_since_open == 1:
            self.failed_opens = 0
        if self.attempts and now - self._opened_at >= self.policy.stable_s:
            self.attempts = self._drops_since_stable = 0
            if self.flaps:
                self.flaps = 0
                return self._move(StreamState.LIVE, "recovered", now)
        return None

    def open_failed(self, now: float, error: str, permanent: bool = False, needs_person: bool = False) -> Transition:
        """The source did not open. ``permanent``: retrying cannot help; ``needs_person``: the server answered
        what usually takes a person to fix (credentials, rights, a path), so retry slowly."""
        self._require(StreamState.CONNECTING, StreamState.RECONNECTING, event="open_failed")
        self.last_error = error
        if permanent or not self.live:
            return self._move(StreamState.FAILED, "open_failed", now, error)
        if needs_person:
            return self._retry_later(now, self.state, "needs_attention", error, self.policy.slow_s)
        return self._retry_later(now, self.state, "open_failed", error)

    def dropped(self, now: float, reason: str, error: str = "") -> Transition:
        """A live stream ended, failed a read or went stale: reconnect after a backoff. A drop before the
        source was stable again makes it flapping."""
        if not self.connected:
            raise IllegalTransition(f"stream {self.stream}: dropped while {self.state.value} and not open")
        if not self.live:
            raise IllegalTransition(f"stream {self.stream}: a recorded source does not reconnect; call ended()")
        self.connected = False
        self.reconnects += 1
        self._drops_since_stable += 1
        if self._drops_since_stable > 1:  # it dropped before, and has not been stable since
            self.flaps += 1
            error = (f"dropped {self._drops_since_stable} times in a row, each time before it had been up for "
                     f"{self.policy.stable_s:g} s; last: {error or reason.replace('_', ' ')}")
            reason = "flapping"
        self.last_error = error
        # A drop grows the backoff (a source that accepts and drops at once is not hammered),
        # but only failed opens count towards max_attempts.
        self.attempts += 1
        delay = self.policy.backoff.delay(self.attempts, self._rng)
        self.retry_at = now + delay
        return self._move(StreamState.RECONNECTING, reason, now, error, retry_in_s=delay)

    def ended(self, now: float, reason: str = "end_of_stream") -> Transition:
        """A recorded source reached its end (or could not be read any further)."""
        self._require(StreamState.LIVE, event="ended")
        self.connected = False
        return self._move(StreamState.ENDED, reason, now)

    def failed(self, now: float, error: str) -> Transition:
        """An error that retrying cannot fix, in any state."""
        self._require(StreamState.CONNECTING, StreamState.LIVE, StreamState.RECONNECTING, event="failed")
        self.last_error = error
        self.connected = False
        return self._move(StreamState.FAILED, "failed", now, error)

    def stop(self, now: float, reason: str = "stopped") -> Transition | None:
        """The operator removed the stream or the pipeline stops; None if already over."""
        if self.state.finished:
            return None
        self.connected = False
        return self._move(StreamState.ENDED, reason, now)

    # -- internals -------------------------------------------------------------
    def _retry_later(self, now: float, state: StreamState, reason: str, error: str,
                     wait_s: float | None = None) -> Transition:
        self.attempts += 1
        self.failed_opens += 1
        limit = self.policy.max_attempts
        if limit is not None and self.failed_opens >= limit:
            detail = f"{error} (gave up after {self.failed_opens} attempt{'s' if self.failed_opens != 1 else ''})"
            self.last_error = detail
            return self._move(StreamState.FAILED, "attempts_exhausted", now, detail)
        delay = self.policy.backoff.delay(self.attempts, self._rng) if wait_s is None else wait_s
        self.retry_at = now + delay
        return self._move(state, reason, now, error, retry_in_s=delay)

    def _move(self, after: StreamState, reason: str, now: float, error: str = "",
              retry_in_s: float | None = None) -> Transition:
        transition = Transition(self.stream, self.state, after, reason, now, error, retry_in_s, self.attempts)
        self.state = after
        self.reason = reason
        return transition

    def _require(self, *states: StreamState, event: str) -> None:
        if self.state not in states:
            raise IllegalTransition(
                f"stream {self.stream}: {event} while {self.state.value} (allowed in {[s.value for s in states]})"
            )
