"""The temporal worker's cost benchmark, run for real: the demo head, the pipeline's worker and a second
process playing cameras over a real ZeroMQ socket. Its figures are timings, so only their consistency
is asserted, never their size."""

from __future__ import annotations

import pytest

from tools.bench.paths import MODEL
from tools.bench.temporal_cost import temporal_cost


@pytest.fixture(scope="module")
def measured() -> dict:
    return temporal_cost(MODEL, streams=6, seconds=2.0, warmup_s=1.0, time_parts=True)


def test_every_camera_is_stepped_in_rounds_and_the_gru_is_part_of_the_worker(measured):
    assert measured["stream_steps"] > 0 and measured["rounds"] > 0
    assert 1.0 <= measured["streams_per_round"] <= 6
    assert measured["gru_cpu_ms_per_round"] > 0
    # The GRU runs inside the worker's process: its CPU is a part of the worker's, never more.
    assert measured["worker_over_gru"] > 1.0
    assert measured["worker_cpu_ms_per_round"] >= measured["worker_thread_cpu_ms_per_round"] * 0.99


def test_the_worker_threads_cpu_is_split_by_thread_and_by_part(measured):
    # By thread, read from /proc in 10 ms ticks: in two seconds the snapshot writer may not reach one, and
    # each thread's figure may be up to a tick above its share of the process's CPU.
    threads = measured["cpu_ms_per_round_by_thread"]
    assert threads["MainThread"] > 0
    rounds = measured["rounds"]
    assert sum(threads.values()) * rounds <= measured["worker_cpu_ms_per_round"] * rounds + 10.0 * len(threads)
    parts = measured["cpu_ms_per_round_by_part"]
    assert set(parts) == {"receiving (poll, receive, parse, reorder)", "of which parsing",
                          "state table, beside the GRU", "after each step (detector, metrics, tallies)",
                          "housekeeping", "taking snapshots"}
    assert parts["of which parsing"] <= parts["receiving (poll, receive, parse, reorder)"]
    assert parts["state table, beside the GRU"] > 0
    # The timed parts are work of the worker's thread, so they add up to no more than it spent.
    timed = sum(v for k, v in parts.items() if k != "of which parsing") + measured["gru_cpu_ms_per_round"]
    assert timed <= measured["worker_thread_cpu_ms_per_round"] * 1.05
