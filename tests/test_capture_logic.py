"""Capture-side decisions with an injected clock: replay pacing and the live drop-oldest buffer."""

import numpy as np

from pipeline.sources import RawFrame
from pipeline.stages.capture import LatestFrames, ReplayPacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_replay_pacer_releases_each_frame_at_its_stream_time():
    clock = FakeClock()
    pacer = ReplayPacer(clock)
    assert pacer.delay(0.0) == 0.0
    clock.now += 0.01
    assert abs(pacer.delay(0.5) - 0.49) < 1e-9
    clock.now += 1.0  # running late: no waiting, no attempt to catch up by skipping
    assert pacer.delay(1.0) == 0.0


def test_live_buffer_drops_the_oldest_and_counts_it():
    buffer = LatestFrames(capacity=2)
    frames = [RawFrame(t=float(i), image=np.zeros((2, 2, 3), np.uint8)) for i in range(5)]
    for f in frames:
        buffer.put(f)
    assert buffer.dropped == 3
    assert buffer.get(timeout=0).t == 3.0
    assert buffer.get(timeout=0).t == 4.0
    assert buffer.get(timeout=0) is False  # empty but open: timed out
    buffer.close()
    assert buffer.get(timeout=0) is None  # closed and empty: the end
