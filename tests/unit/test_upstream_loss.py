"""When the temporal stage gives up the frames a dead embed worker held (issue 18): at the grace after the news,
and at each stream's first frame from the worker's successor, however long the restart took."""

from __future__ import annotations

import pytest

from pipeline.stages.temporal.upstream import LostUpstream, LostUpstreamConfigError


def test_the_sweep_is_due_once_when_the_grace_after_a_death_is_over():
    lost = LostUpstream(grace_s=0.5)
    assert not lost.sweep_due(100.0)
    lost.lost(worker=0, now=100.0)
    assert not lost.sweep_due(100.49)
    assert lost.sweep_due(100.5)
    assert not lost.sweep_due(101.0)  # once


def test_a_second_death_within_the_grace_moves_the_sweep_to_its_own_grace():
    lost = LostUpstream(grace_s=0.5)
    lost.lost(worker=0, now=100.0)
    lost.lost(worker=1, now=100.3)
    assert not lost.sweep_due(100.5)
    assert lost.sweep_due(100.8)


def test_a_streams_first_frame_from_the_successor_says_give_up_below_it_however_late_it_comes():
    lost = LostUpstream(grace_s=0.5)
    lost.lost(worker=0, now=100.0)
    # Within the grace, a frame from that index is the dead worker's own, still on its way.
    assert not lost.successor_frame(("cam", 0), worker=0, now=100.2)
    # Other workers' frames say nothing about the dead one's.
    assert not lost.successor_frame(("cam", 0), worker=1, now=101.0)
    # The successor's first frame of each stream, after a restart that took seconds: once per stream.
    assert lost.successor_frame(("cam", 0), worker=0, now=103.0)
    assert not lost.successor_frame(("cam", 0), worker=0, now=103.3)
    assert lost.successor_frame(("yard", 2), worker=0, now=104.0)


def test_no_death_no_successor_and_a_forgotten_stream_is_not_remembered():
    lost = LostUpstream(grace_s=0.5)
    assert not lost.successor_frame(("cam", 0), worker=0, now=100.0)
    lost.lost(worker=0, now=100.0)
    assert lost.successor_frame(("cam", 0), worker=0, now=101.0)
    # An ended or replaced generation never comes back (a new one has a new key): nothing is kept of it.
    lost.forget(("cam", 0))
    assert lost.successor_frame(("cam", 0), worker=0, now=102.0)


def test_the_same_worker_dying_again_starts_over():
    lost = LostUpstream(grace_s=0.5)
    lost.lost(worker=0, now=100.0)
    assert lost.successor_frame(("cam", 0), worker=0, now=101.0)
    lost.lost(worker=0, now=110.0)
    assert not lost.successor_frame(("cam", 0), worker=0, now=110.1)
    assert lost.successor_frame(("cam", 0), worker=0, now=112.0)


@pytest.mark.parametrize("grace", [-1.0, float("nan"), "soon"])
def test_a_grace_that_is_not_seconds_is_refused(grace):
    with pytest.raises(LostUpstreamConfigError):
        LostUpstream(grace_s=grace)
