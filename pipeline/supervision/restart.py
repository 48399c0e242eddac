"""When the supervisor restarts a stage process that died, and when it gives up.

A stage that dies is restarted after an exponential backoff that grows with
the number of deaths in the last ``window_s``. Two things end the run
instead: a stage that reported an error a restart cannot fix (``fatal``: an
engine that cannot run on this machine, a model that does not load), and a
crash loop (more than ``max_restarts`` deaths within ``window_s``). Pure
logic: the caller passes the monotonic time in.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from dataclasses import dataclass

from pipeline.backoff import Backoff


@dataclass(frozen=True)
class RestartPolicy:
    backoff: Backoff = Backoff(initial_s=0.2, max_s=10.0, multiplier=2.0, jitter=0.2)
    max_restarts: int = 5
    window_s: float = 60.0


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay_s: float = 0.0
    reason: str = ""


class StageRestarts:
    """Counts each stage's deaths and decides what follows one."""

    def __init__(self, policy: RestartPolicy, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self.total: dict[str, int] = defaultdict(int)

    def on_exit(self, stage: str, now: float, fatal: bool = False, error: str = "") -> RestartDecision:
        if fatal:
            return RestartDecision(False, reason=f"stage {stage} cannot run: {error}")
        recent = self._recent[stage]
        recent.append(now)
        while recent and now - recent[0] > self.policy.window_s:
            recent.popleft()
        if len(recent) > self.policy.max_restarts:
            return RestartDecision(
                False,
                reason=(f"stage {stage} died {len(recent)} times within {self.policy.window_s:g} s"
                        + (f"; last error: {error}" if error else "")),
            )
        self.total[stage] += 1
        return RestartDecision(True, self.policy.backoff.delay(len(recent), self._rng))
