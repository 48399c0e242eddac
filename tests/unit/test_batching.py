"""The embed stage's dynamic batcher: full batches go at once, partial ones after max_wait, always FIFO."""

from __future__ import annotations

import pytest

from pipeline.stages.embed.batching import BatcherConfigError, DynamicBatcher


def test_a_full_batch_is_ready_at_once_and_leaves_the_rest_queued():
    batcher: DynamicBatcher[str] = DynamicBatcher(max_batch_size=3, max_wait_s=1.0)
    for i, name in enumerate("abcde"):
        batcher.add(name, now=10.0 + i * 0.01)
    assert batcher.pending == 5
    assert batcher.ready(10.05)
    assert batcher.time_until_due(10.05) == 0.0
    assert batcher.take(10.05) == ["a", "b", "c"]
    assert batcher.pending == 2
    # The remainder is neither full nor old enough yet.
    assert not batcher.ready(10.05)
    assert batcher.take(10.05) == []


def test_a_partial_batch_waits_for_max_wait_of_its_oldest_item_and_not_longer():
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch_size=8, max_wait_s=0.5)
    batcher.add(1, now=100.0)
    batcher.add(2, now=100.3)
    assert not batcher.ready(100.49)
    assert batcher.take(100.49) == []
    assert batcher.time_until_due(100.2) == pytest.approx(0.3)
    assert batcher.ready(100.5)
    assert batcher.take(100.5) == [1, 2]
    assert batcher.pending == 0
    assert not batcher.ready(200.0)


def test_the_wait_is_measured_from_the_oldest_pending_item_after_a_take():
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch_size=2, max_wait_s=1.0)
    batcher.add(1, now=0.0)
    batcher.add(2, now=0.1)
    batcher.add(3, now=0.2)
    assert batcher.take(0.2) == [1, 2]
    assert batcher.oldest_wait_s(0.7) == pytest.approx(0.5)
    assert batcher.time_until_due(0.7) == pytest.approx(0.5)
    assert not batcher.ready(1.19)
    assert batcher.take(1.2) == [3]


def test_fifo_order_over_many_batches():
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch_size=4, max_wait_s=0.0)
    for i in range(10):
        batcher.add(i, now=float(i))
    taken: list[int] = []
    while batcher.pending:
        taken.extend(batcher.take(100.0))
    assert taken == list(range(10))


def test_zero_max_wait_sends_every_item_at_once():
    batcher: DynamicBatcher[str] = DynamicBatcher(max_batch_size=4, max_wait_s=0.0)
    batcher.add("x", now=5.0)
    assert batcher.time_until_due(5.0) == 0.0
    assert batcher.take(5.0) == ["x"]


def test_time_until_due_is_none_when_empty_and_never_negative():
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch_size=2, max_wait_s=0.25)
    assert batcher.time_until_due(0.0) is None
    assert batcher.oldest_wait_s(0.0) is None
    batcher.add(1, now=1.0)
    assert batcher.time_until_due(1.0) == pytest.approx(0.25)
    assert batcher.time_until_due(9.0) == 0.0


def test_flush_takes_everything_regardless_of_size_or_age():
    batcher: DynamicBatcher[int] = DynamicBatcher(max_batch_size=2, max_wait_s=60.0)
    for i in range(5):
        batcher.add(i, now=0.0)
    assert batcher.flush() == [0, 1, 2, 3, 4]
    assert batcher.pending == 0
    assert batcher.flush() == []


@pytest.mark.parametrize(
    "size, wait",
    [(0, 0.1), (-1, 0.1), (1.5, 0.1), (True, 0.1), (4, -0.01), (4, float("nan")), (4, float("inf")), (4, "1")],
)
def test_parameters_are_validated(size, wait):
    with pytest.raises(BatcherConfigError):
        DynamicBatcher(max_batch_size=size, max_wait_s=wait)
