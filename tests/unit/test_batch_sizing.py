"""The embed worker's batch size: what is waiting, within the sizes measured cheapest per frame here,
never waiting for more; trial calls for new sizes, re-measured when stale (injected clock)."""

from __future__ import annotations

import pytest

from pipeline.stages.embed.batching import DynamicBatcher
from pipeline.stages.embed.sizing import BatchSizer, BatchSizerConfigError


def _run(sizer: BatchSizer, waiting: int, now: float, cost_of) -> int:
    """One engine call: the size chosen for ``waiting`` frames, its time reported as ``cost_of(size)``."""
    size = sizer.choose(waiting, now)
    if size:
        sizer.record(size, cost_of(size), now)
    return size


def test_nothing_waiting_is_no_call_and_a_lone_frame_goes_at_once():
    sizer = BatchSizer(8)
    assert sizer.choose(0, 0.0) == 0
    assert sizer.choose(1, 0.0) == 1  # at low load nothing waits for company


def test_never_more_than_waiting_nor_than_the_maximum():
    sizer = BatchSizer(4)
    for waiting in range(1, 12):
        assert 1 <= sizer.choose(waiting, 0.0) <= min(waiting, 4)


def test_settles_on_the_size_cheapest_per_frame_like_a_cpu_beside_decoders():
    # Per frame: 1 frame 10 ms, 2 frames 7 ms, 4 frames 8 ms, 8 frames 12 ms (caches outgrown).
    per_frame = {1: 0.010, 2: 0.007, 3: 0.0075, 4: 0.008, 5: 0.009, 6: 0.010, 7: 0.011, 8: 0.012}
    sizer = BatchSizer(8)
    chosen = [_run(sizer, 20, i * 0.01, lambda s: s * per_frame[s]) for i in range(100)]
    assert chosen[:4] == [8, 8, 8, 8]  # a first call (set-up, not counted) and three trials of the largest
    assert set(chosen[:40]) == set(range(1, 9))  # every size is tried
    assert set(chosen[-20:]) == {2}
    assert [row.size for row in sizer.table()] == list(range(1, 9))
    assert sizer.table()[1].per_frame_s == pytest.approx(0.007)


def test_settles_on_the_largest_where_per_frame_cost_falls_with_size_like_a_gpu():
    sizer = BatchSizer(32)
    chosen = [_run(sizer, 40, i * 0.001, lambda s: 0.002 + 0.0001 * s) for i in range(200)]
    assert set(chosen[-20:]) == {32}


def test_a_short_queue_limits_the_choice_to_what_waits():
    per_frame = {1: 0.010, 2: 0.007, 3: 0.006, 4: 0.005}
    sizer = BatchSizer(4)
    for i in range(40):
        _run(sizer, 4, i * 0.01, lambda s: s * per_frame[s])
    assert sizer.choose(4, 0.5) == 4
    assert sizer.choose(3, 0.5) == 3
    assert sizer.choose(1, 0.5) == 1


def test_the_first_call_of_a_size_is_not_counted():
    sizer = BatchSizer(2)
    sizer.record(2, 5.0, 0.0)  # a first call: the engine sets up the shape
    assert sizer.table() == []
    sizer.record(2, 0.02, 0.1)
    assert sizer.table()[0].per_frame_s == pytest.approx(0.01)


def test_the_estimate_follows_the_load_and_stale_sizes_are_measured_again():
    per_frame = {1: 0.010, 2: 0.007}
    sizer = BatchSizer(2, refresh_s=10.0)
    now = 0.0
    for _ in range(20):
        _run(sizer, 2, now, lambda s: s * per_frame[s])
        now += 0.1
    assert sizer.choose(2, now) == 2
    # The decoders get busier: a pair now costs 12 ms a frame, a single frame still 10.
    per_frame[2] = 0.012
    for _ in range(30):
        _run(sizer, 2, now, lambda s: s * per_frame[s])
        now += 0.1
    assert sizer.choose(2, now) == 1
    # Size 2 is not called again while 1 is cheaper, until its figure is older than refresh_s...
    per_frame[2] = 0.006
    last_measured, tried_again = now, None
    while tried_again is None and now < 30.0:
        if _run(sizer, 2, now, lambda s: s * per_frame[s]) == 2:
            tried_again = now
        now += 0.1
    assert tried_again is not None and tried_again - last_measured <= 10.0 + 0.11
    assert tried_again - last_measured > 5.0
    # ...and from its fresh figure it wins again once its average comes down.
    for _ in range(200):
        _run(sizer, 2, now, lambda s: s * per_frame[s])
        now += 0.1
    assert sizer.choose(2, now) == 2


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_batch_size": 4, "trial_calls": 0},
                                    {"max_batch_size": 4, "refresh_s": -1.0}, {"max_batch_size": 4, "smoothing": 0.0}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(BatchSizerConfigError):
        BatchSizer(**kwargs)


def test_a_reported_size_outside_the_range_is_refused():
    with pytest.raises(BatchSizerConfigError, match="outside 1..4"):
        BatchSizer(4).record(5, 0.1, 0.0)


def test_the_batcher_takes_the_size_it_is_given_and_keeps_the_rest_in_order():
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch_size=8, max_wait_s=0.0)
    for i in range(5):
        batcher.add(i, now=0.0)
    assert batcher.take(0.0, 2) == [0, 1]
    assert batcher.take(0.0, 20) == [2, 3, 4]  # never beyond what waits
