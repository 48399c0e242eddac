"""Sampling by timestamp: the same step rate from any frame rate."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.sources.sampling import StepSampler


def _accepted_times(fps: float, seconds: float, rate: float) -> list[float]:
    sampler = StepSampler(rate)
    return [t for t in (i / fps for i in range(int(seconds * fps))) if sampler.accept(t)]


@pytest.mark.parametrize("fps", [10, 15, 25, 29.97, 30])
def test_any_frame_rate_gives_the_step_rate(fps):
    times = _accepted_times(fps, 60.0, 4.0)
    assert len(times) == pytest.approx(240, abs=1)
    # Each step is the first frame at or after k / rate.
    for k, t in enumerate(times):
        assert k / 4.0 - 5e-4 <= t < k / 4.0 + 1.0 / fps


def test_25_and_30_fps_sources_give_steps_at_the_same_times_within_a_frame():
    a, b = _accepted_times(25, 20, 4.0), _accepted_times(30, 20, 4.0)
    assert len(a) == len(b)
    assert np.max(np.abs(np.array(a) - np.array(b))) < 1 / 25


def test_source_slower_than_step_rate_gives_a_step_per_frame_without_bursts():
    sampler = StepSampler(4.0)
    accepted = [t for t in np.arange(0, 10, 0.5) if sampler.accept(float(t))]
    assert len(accepted) == 20


def test_a_stall_does_not_cause_a_burst_of_catch_up_steps():
    sampler = StepSampler(4.0)
    assert sampler.accept(0.0)
    assert sampler.accept(5.0)  # 5 s gap: one step, not twenty
    assert not sampler.accept(5.1)
    assert sampler.accept(5.25)


def test_reset_starts_a_new_sequence():
    sampler = StepSampler(2.0)
    assert sampler.accept(0.0) and not sampler.accept(0.2)
    sampler.reset(start_t=0.1)
    assert sampler.accept(0.1)


def test_timestamps_going_backwards_are_an_error():
    sampler = StepSampler(4.0)
    sampler.accept(1.0)
    with pytest.raises(ValueError, match="backwards"):
        sampler.accept(0.5)


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf")])
def test_bad_rate_rejected(rate):
    with pytest.raises(ValueError, match="step_rate"):
        StepSampler(rate)


def test_a_resumed_sampling_takes_exactly_the_steps_an_unbroken_one_takes():
    """A replay resumed by a new capture process after the step at t: the same steps follow."""
    frames = [i / 30 for i in range(300)]  # 30 fps
    whole = StepSampler(4.0)
    steps = [t for t in frames if whole.accept(t)]
    for cut in (3, 10, 17):  # resume after the cut-th step
        resumed = StepSampler(4.0)
        resumed.resume_after(steps[cut])
        after = [t for t in frames if t > steps[cut] and resumed.accept(t)]
        assert after == steps[cut + 1:]
