"""Stand-ins the unit tests inject: a clock a test moves by hand, and a sink that keeps what it is given."""

from __future__ import annotations


class ManualClock:
    """A clock (``clock()`` returns ``now``) that moves only when a test sets or advances ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Collect:
    """An output sink that keeps every record it is given, in order."""

    name = "collect"

    def __init__(self) -> None:
        self.records: list = []

    def emit(self, record) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass
