"""A live frame's time from its own timestamps, anchored to arrival: bursts are old, time never goes back."""

from __future__ import annotations

import pytest

from pipeline.sources.live_time import StreamClock


def test_frames_arriving_on_time_are_stamped_at_their_spacing_and_are_young():
    clock = StreamClock()
    placed = [clock.place(90.0 + k * 0.04, 10.0 + k * 0.04 + jitter)
              for k, jitter in enumerate([0.0, 0.003, 0.001, 0.004, 0.0])]
    assert [round(p.t, 6) for p in placed] == [10.0, 10.04, 10.08, 10.12, 10.16]
    assert max(p.age_s for p in placed) == pytest.approx(0.004)


def test_a_burst_of_buffered_frames_after_an_outage_is_old_by_as_long_as_it_waited():
    clock = StreamClock()
    for k in range(25):  # one second of a 25 fps stream, on time
        clock.place(k * 0.04, 5.0 + k * 0.04)
    # Ten seconds of nothing, then FFmpeg hands over the next 50 frames it had buffered, all at once.
    burst = [clock.place((25 + k) * 0.04, 16.0) for k in range(50)]
    assert burst[0].t == pytest.approx(6.0) and burst[0].age_s == pytest.approx(10.0)
    assert burst[-1].t == pytest.approx(7.96) and burst[-1].age_s == pytest.approx(8.04)
    # Frames captured after the outage arrive on time again: young, and their time moves on with the wall.
    after = clock.place(11.0, 16.02)
    assert (after.t, after.age_s) == (pytest.approx(16.0), pytest.approx(0.02))


def test_a_first_frame_that_was_itself_late_is_corrected_by_a_later_one_that_was_not():
    clock = StreamClock()
    first = clock.place(0.0, 2.5)  # it sat in a buffer for 2 s: nothing can tell yet
    assert (first.t, first.age_s) == (2.5, 0.0)
    on_time = clock.place(2.0, 2.54)  # captured 2 s later by its timestamps, arrived only 0.04 s later
    assert (on_time.t, on_time.age_s) == (pytest.approx(2.54), 0.0)
    late = clock.place(2.04, 4.58)
    assert late.age_s == pytest.approx(2.0)


def test_timestamps_that_go_back_start_a_new_anchor_and_time_never_goes_back():
    clock = StreamClock()
    clock.place(100.0, 1.0)
    before = clock.place(100.04, 1.04)
    restarted = clock.place(0.0, 1.08)  # the server restarted its RTP clock
    then = clock.place(0.04, 1.12)
    assert restarted.t >= before.t and then.t > restarted.t
    assert (restarted.age_s, then.age_s) == (0.0, pytest.approx(0.0))


def test_a_stream_without_timestamps_is_stamped_by_arrival():
    clock = StreamClock()
    assert [clock.place(None, a).t for a in (1.0, 1.5, 1.4, 2.0)] == [1.0, 1.5, 1.5, 2.0]
