"""Pairing a stream's preview frames with its scored steps, for the overlay.

Capture sends a small preview of every frame it sends to the model, and the
temporal stage sends every scored step; both carry the frame's stream time
``t``, and they reach the overlay stage over different paths, in either
order. What waits for its partner is bounded (per stream, and in time). A
step whose frame never came (the preview was dropped on a busy machine) is
counted as ``unmatched``, never drawn with another frame; a frame whose step
never comes was dropped downstream, where the frame accounting already
counts it, so here it is only let go (``frames_unused``). Each scored step
is thus drawn or counted once.

Free of I/O; the clock is injected.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class MatchedStep:
    stream: str
    t: float
    frame: np.ndarray
    probs: tuple[float, ...]


class StepMatcher:
    def __init__(self, max_pending: int = 32, max_wait_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._max_pending = max_pending
        self._max_wait_s = max_wait_s
        self._clock = clock
        # stream -> t -> (arrived, payload), oldest first
        self._frames: dict[str, OrderedDict[float, tuple[float, np.ndarray]]] = {}
        self._steps: dict[str, OrderedDict[float, tuple[float, tuple[float, ...]]]] = {}
        self.unmatched: Counter[str] = Counter()  # stream -> steps given up; the owner reads and resets
        self.frames_unused: Counter[str] = Counter()

    def add_frame(self, stream: str, t: float, frame: np.ndarray) -> MatchedStep | None:
        step = self._steps.get(stream, {}).pop(t, None)
        if step is not None:
            return MatchedStep(stream, t, frame, step[1])
        self._hold(self._frames.setdefault(stream, OrderedDict()), stream, t, frame, self.frames_unused)
        return None

    def add_step(self, stream: str, t: float, probs: Sequence[float]) -> MatchedStep | None:
        frame = self._frames.get(stream, {}).pop(t, None)
        if frame is not None:
            return MatchedStep(stream, t, frame[1], tuple(probs))
        self._hold(self._steps.setdefault(stream, OrderedDict()), stream, t, tuple(probs), self.unmatched)
        return None

    def _hold(self, pending: OrderedDict, stream: str, t: float, payload, lost: Counter) -> None:
        if t in pending:  # a replaced frame or step (a replay's loop reuses times): the older one is let go
            del pending[t]
            lost[stream] += 1
        pending[t] = (self._clock(), payload)
        while len(pending) > self._max_pending:
            pending.popitem(last=False)
            lost[stream] += 1

    def expire(self) -> None:
        """Give up what has waited longer than ``max_wait_s``."""
        cutoff = self._clock() - self._max_wait_s
        for table, lost in ((self._frames, self.frames_unused), (self._steps, self.unmatched)):
            for stream, pending in list(table.items()):
                while pending and next(iter(pending.values()))[0] < cutoff:
                    pending.popitem(last=False)
                    lost[stream] += 1
                if not pending:
                    del table[stream]

    def flush(self) -> None:
        """At the end: whatever still waits will never be matched."""
        for table, lost in ((self._frames, self.frames_unused), (self._steps, self.unmatched)):
            for stream, pending in table.items():
                lost[stream] += len(pending)
            table.clear()

    def pending(self, stream: str) -> int:
        return len(self._frames.get(stream, ())) + len(self._steps.get(stream, ()))
