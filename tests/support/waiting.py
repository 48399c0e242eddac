"""Waiting in a test for something that happens on another thread or in another process."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, poll_s: float = 0.01) -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll_s)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.1):
    """Polls ``condition`` until it returns something true, and returns that; fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
