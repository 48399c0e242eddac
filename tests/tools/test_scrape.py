"""tools.testbed.scrape: the histogram arithmetic the soak and the benchmark read Prometheus with."""

from __future__ import annotations

import pytest

from tools.testbed.scrape import histogram_buckets, interval_quantile

E2E = "actionpipe_end_to_end_latency_seconds"


def _series(stream: str, counts: dict[float, float]) -> dict:
    return {(f"{E2E}_bucket", tuple(sorted({"stream": stream, "le": str(le)}.items()))): c for le, c in counts.items()}


def test_buckets_are_summed_over_every_series_that_carries_the_labels():
    samples = {**_series("a", {0.1: 3, float("inf"): 4}), **_series("b", {0.1: 1, float("inf"): 6}),
               (f"{E2E}_count", (("stream", "a"),)): 4}
    assert histogram_buckets(samples, E2E) == {0.1: 4, float("inf"): 10}
    assert histogram_buckets(samples, E2E, stream="b") == {0.1: 1, float("inf"): 6}
    assert histogram_buckets(samples, E2E, stream="c") == {}


def test_the_interval_quantile_counts_only_what_came_between_two_scrapes():
    before = {0.1: 100.0, 1.0: 100.0, float("inf"): 100.0}
    after = {0.1: 110.0, 1.0: 130.0, float("inf"): 130.0}
    # 30 new observations: 10 under 100 ms, 20 between 100 ms and 1 s; the median (rank 15) is a quarter in.
    assert interval_quantile(before, after, 0.5) == pytest.approx(0.1 + 0.9 * 5 / 20)
    assert interval_quantile(after, after, 0.5) is None  # nothing new
