"""Sampling frames to the temporal model's step rate by timestamp, not by count.

Step k is due at ``k / step_rate`` seconds of stream time; it takes the first
frame whose timestamp reaches that time. A 25 fps and a 30 fps source thus feed
the model the same rate, and a source slower than the step rate simply yields a
step per frame. Pure logic: no clock or I/O of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Timestamps from containers are rounded to the millisecond; without the
# tolerance a 30 fps frame at 0.2333 s would miss a step due at 0.2333... s.
_TOLERANCE_S = 5e-4


@dataclass
class StepSampler:
    """Decides, frame by frame, which frames become model steps. One per stream."""

    step_rate: float
    _next_due: float = 0.0
    _last_t: float = -math.inf

    def __post_init__(self) -> None:
        if not (self.step_rate > 0 and math.isfinite(self.step_rate)):
            raise ValueError(f"step_rate must be a positive number of steps per second, got {self.step_rate}")

    def reset(self, start_t: float = 0.0) -> None:
        """Start a new sequence (stream opened or reconnected) at stream time ``start_t``."""
        self._next_due = start_t
        self._last_t = -math.inf

    def resume_after(self, t: float) -> None:
        """Continue a sampling whose last step was the frame at ``t`` (taken by another process):
        the next step is the first frame at or after the grid point following it."""
        period = 1.0 / self.step_rate
        self._next_due = (math.floor((t + _TOLERANCE_S) / period) + 1) * period
        self._last_t = -math.inf

    def accept(self, t: float) -> bool:
        """True when the frame at stream time ``t`` is the next step."""
        if t < self._last_t:
            raise ValueError(f"frame timestamps must not go backwards: {t:.6f} after {self._last_t:.6f}")
        self._last_t = t
        if t + _TOLERANCE_S < self._next_due:
            return False
        period = 1.0 / self.step_rate
        # Skip the steps a slow or stalled source never reached, so the next one
        # is due after this frame rather than immediately (no burst catch-up).
        missed = math.floor((t + _TOLERANCE_S - self._next_due) / period)
        self._next_due += (missed + 1) * period
        return True
