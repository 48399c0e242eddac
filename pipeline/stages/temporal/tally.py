"""What the temporal worker counts per stream for the run's summary: steps, events, drops, latencies."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

LATENCY_SAMPLES_KEPT = 20_000


@dataclass
class StreamTally:
    processed: int = 0
    events: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_t: float | None = None
    last_t: float | None = None
    first_wall: float | None = None  # when the first step was scored (time.time())
    last_wall: float | None = None
    ended: bool = False
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES_KEPT))

    def summary(self) -> dict:
        lat = np.array(self.latencies) if self.latencies else None
        span = (self.last_t - self.first_t) if self.first_t is not None and self.last_t is not None else 0.0
        return {
            "processed": self.processed,
            "events": self.events,
            "dropped": dict(self.dropped),
            "step_rate_hz": (self.processed - 1) / span if span > 0 else None,
            "latency_p50_s": float(np.percentile(lat, 50)) if lat is not None else None,
            "latency_p99_s": float(np.percentile(lat, 99)) if lat is not None else None,
            "first_step_wall": self.first_wall,
            "last_step_wall": self.last_wall,
        }
