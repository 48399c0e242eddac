"""Exponential backoff with jitter, for reconnecting sources and restarting stages.

Attempt ``n`` (1-based) waits ``initial_s * multiplier**(n-1)``, capped at
``max_s``, then moved by up to ``±jitter`` of itself so that twenty cameras
that dropped together do not all knock again in the same millisecond. Pure:
the random source is passed in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pipeline.errors import ActionPipeError


class BackoffConfigError(ActionPipeError, ValueError):
    """Backoff bounds that cannot work."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for name in ("initial_s", "max_s", "multiplier", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BackoffConfigError(f"{name} must be a finite number, got {value!r}")
        if self.initial_s < 0 or self.max_s < self.initial_s:
            raise BackoffConfigError(f"need 0 <= initial_s <= max_s, got initial_s={self.initial_s}, max_s={self.max_s}")
        if self.multiplier < 1:
            raise BackoffConfigError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise BackoffConfigError(f"jitter must be within [0, 1], got {self.jitter}")

    def base_delay(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` without jitter."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        # Cap the exponent: multiplier**attempt overflows long before anyone retries that often.
        exponent = min(attempt - 1, 1024)
        try:
            delay = self.initial_s * self.multiplier**exponent
        except OverflowError:
            delay = math.inf if self.initial_s > 0 else 0.0
        return min(self.max_s, delay)

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = self.base_delay(attempt)
        return min(self.max_s, max(0.0, base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0))))
