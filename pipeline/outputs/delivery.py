"""Delivering records to outputs on other machines (a webhook, an MQTT broker), off the scoring path.

A network output is slow sometimes and down sometimes; scoring and the other
outputs must not notice either, and records it could still deliver later must
not be lost. :class:`BackgroundSink` gives one such output a bounded buffer
and a thread of its own: ``emit`` appends and returns at once; the thread
delivers the records in order, and retries a failed delivery with backoff
until it succeeds (a temporary failure) or is refused for good (a permanent
one: the record is dropped and counted). When the buffer is full the oldest
record makes room, counted: memory stays bounded however long the output is
down. Records still buffered at shutdown get ``flush_timeout_s`` to go out;
the rest are counted as lost.

With a spool (``spool_dir``), what is still unsent when the flush time is up
is written to disk instead (counted as spooled, not lost) and goes out first
in the next run of the same output.

A transport that knows when it can deliver again (MQTT reconnected) says so
through ``on_ready``, and the waiting retry goes at once instead of at the
end of its backoff.

The decisions (what a buffer keeps, when to retry) are plain code with an
injected clock and random source; the transports do the I/O.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pipeline.backoff import Backoff
from pipeline.errors import ActionPipeError

logger = logging.getLogger(__name__)

DROP_REASONS = ("buffer_full", "refused", "unsent_at_exit")
DEFAULT_RETRY = Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, jitter=0.2)


class DeliveryError(ActionPipeError):
    """A transport could not deliver a record; ``permanent`` when trying again cannot help."""

    restart_helps = True

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transport(Protocol):
    """What a network output does; it may also have ``on_ready(callback)``, called when it can deliver again."""

    name: str

    def deliver(self, record) -> None:
        """Deliver one record or raise DeliveryError."""

    def close(self) -> None: ...


class Spool(Protocol):
    """Where records unsent at a stop wait for the next run (:class:`~pipeline.outputs.spool.FileSpool`)."""

    def load(self) -> list: ...

    def save(self, records: list) -> None: ...


@dataclass(frozen=True)
class DropReport:
    sink: str
    reason: str  # buffer_full | refused | unsent_at_exit
    count: int


class RecordBuffer:
    """A bounded FIFO that makes room by dropping its oldest record (the newest say most about now)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a delivery buffer holds at least one record, got capacity {capacity}")
        self.capacity = capacity
        self._items: deque = deque()

    def push(self, record) -> int:
        """Appends ``record``; returns how many old records were dropped to make room (0 or 1)."""
        dropped = 0
        if len(self._items) >= self.capacity:
            self._items.popleft()
            dropped = 1
        self._items.append(record)
        return dropped

    def peek(self):
        return self._items[0] if self._items else None

    def pop(self):
        return self._items.popleft()

    def drain(self) -> list:
        items, self._items = list(self._items), deque()
        return items

    def __len__(self) -> int:
        return len(self._items)


class RetrySchedule:
    """When to try the record at the head of the buffer again. Pure: clock and randomness come in."""

    def __init__(self, backoff: Backoff = DEFAULT_RETRY, rng: random.Random | None = None) -> None:
        self._backoff = backoff
        self._rng = rng or random.Random()
        self.failures = 0
        self.not_before = 0.0

    def failed(self, now: float) -> float:
        """Records a failed attempt; returns the delay before the next one."""
        self.failures += 1
        delay = self._backoff.delay(self.failures, self._rng)
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0

    def wait_s(self, now: float) -> float:
        return max(0.0, self.not_before - now)


class BackgroundSink:
    """A :class:`~pipeline.outputs.sinks.Sink` whose records travel on their own thread through ``transport``."""

    def __init__(self, transport: Transport, capacity: int = 1000, backoff: Backoff = DEFAULT_RETRY,
                 on_drop: Callable[[DropReport], None] | None = None,
                 on_delivered: Callable[[str], None] | None = None, flush_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 spool: Spool | None = None, on_spooled: Callable[[int], None] | None = None) -> None:
        self.name = transport.name
        self._transport = transport
        self._buffer = RecordBuffer(capacity)
        self._schedule = RetrySchedule(backoff, rng)
        self._on_drop = on_drop or (lambda report: None)
        self._on_delivered = on_delivered or (lambda sink: None)
        self._flush_timeout_s = flush_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._deadline: float | None = None
        self._failing = False
        self._in_flight = None  # taken from the buffer; retried until delivered or refused
        self.delivered = 0
        self.dropped: dict[str, int] = {}
        self.spooled = 0
        self._spool = spool
        self._on_spooled = on_spooled or (lambda count: None)
        if spool is not None:
            earlier = spool.load()
            if earlier:
                logger.info("output %s: %d record(s) spooled by an earlier run go out first", self.name, len(earlier))
            for record in earlier:
                dropped = self._buffer.push(record)
                if dropped:
                    self._drop("buffer_full", dropped)
        on_ready = getattr(transport, "on_ready", None)
        if on_ready is not None:
            on_ready(self.wake)
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    # -- the scoring side: never blocks on the network ------------------------------------------
    def emit(self, record) -> None:
        with self._lock:
            if self._closing:
                raise RuntimeError(f"output {self.name} is closed")
            dropped = self._buffer.push(record)
            self._wake.notify()
        if dropped:
            self._drop("buffer_full", dropped)

    def wake(self) -> None:
        """The transport can deliver again: the waiting retry goes now (its backoff keeps growing if it fails)."""
        with self._lock:
            self._schedule.not_before = 0.0
            self._wake.notify()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer) + (self._in_flight is not None)

    # -- the delivery thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = self._clock()
                    has_work = self._in_flight is not None or bool(self._buffer)
                    if self._closing and (not has_work or now >= (self._deadline or now)):
                        left = ([self._in_flight] if self._in_flight is not None else []) + self._buffer.drain()
                        self._in_flight = None
                        break
                    wait = self._schedule.wait_s(now) if has_work else None
                    if has_work and wait == 0.0:
                        if self._in_flight is None:
                            self._in_flight = self._buffer.pop()
                        record, left = self._in_flight, None
                        break
                    if self._closing and self._deadline is not None:
                        wait = min(wait if wait is not None else float("inf"), self._deadline - now)
                    self._wake.wait(timeout=wait)
            if left is not None:
                self._leave(left)
                return
            self._attempt(record)

    def _leave(self, left: list) -> None:
        """At the stop: what could not be delivered in time is spooled for the next run, or counted as lost."""
        if self._spool is not None:
            try:
                self._spool.save(left)
            except OSError as exc:
                logger.error("output %s: could not spool %d record(s) (%s)", self.name, len(left), exc)
            else:
                if left:
                    logger.warning("output %s: %d record(s) not delivered before shutdown; spooled for the next run",
                                   self.name, len(left))
                    self.spooled += len(left)
                    self._on_spooled(len(left))
                return
        if left:
            logger.error("output %s: %d record(s) not delivered before shutdown", self.name, len(left))
            self._drop("unsent_at_exit", len(left))

    def _attempt(self, record) -> None:
        try:
            self._transport.deliver(record)
        except Exception as exc:
            self._failed(exc)
            return
        with self._lock:
            self._in_flight = None
            self._schedule.succeeded()
        self.delivered += 1
        self._on_delivered(self.name)
        if self._failing:
            logger.info("output %s delivers again", self.name)
            self._failing = False

    def _failed(self, exc: Exception) -> None:
        if not isinstance(exc, DeliveryError):
            # A bug or a library's surprise, not the receiver's answer: shown in full, and the record is
            # retried like any failure, so the thread (and what it holds) outlives it.
            logger.exception("output %s: delivery raised %s; retrying", self.name, type(exc).__name__)
            exc = DeliveryError(f"{type(exc).__name__}: {exc}")
        if exc.permanent:
            with self._lock:
                self._in_flight = None
            logger.error("output %s refused a record for good (%s); it is dropped", self.name, exc)
            self._drop("refused", 1)
            return
        with self._lock:
            delay = self._schedule.failed(self._clock())
        if not self._failing:
            logger.error("output %s: delivery failed (%s); retrying, records are buffered (up to %d)",
                         self.name, exc, self._buffer.capacity)
            self._failing = True
        else:
            logger.debug("output %s: retry %d failed (%s); next in %.2f s", self.name,
                         self._schedule.failures, exc, delay)

    def _drop(self, reason: str, count: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        self._on_drop(DropReport(self.name, reason, count))

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._deadline = self._clock() + self._flush_timeout_s
            self._wake.notify()
        self._thread.join(self._flush_timeout_s + 10.0)
        self._transport.close()
