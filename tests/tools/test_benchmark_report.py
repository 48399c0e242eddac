"""The benchmark's arithmetic: medians of real runs and latency quantiles from Prometheus buckets.

The benchmark itself (an hour of real video on both cores) runs by hand:
``python -m tools.benchmark``; these check the parts that decide what it reports.
"""

from __future__ import annotations

import pytest

from tools.bench.runs import median_of
from tools.testbed.scrape import histogram_quantile


def test_median_is_one_of_the_runs_and_keeps_every_figure():
    runs = [{"steps_per_s": 90.0, "startup_s": 1.5}, {"steps_per_s": 80.0, "startup_s": 1.7},
            {"steps_per_s": 85.0, "startup_s": 1.6}]
    median = median_of(runs)
    assert median["steps_per_s"] == 85.0
    assert median["startup_s"] == 1.6  # the same run's other figures, not a mix of runs
    assert median["runs"] == [90.0, 80.0, 85.0]


def test_median_of_an_even_count_takes_the_lower_middle_run():
    assert median_of([{"steps_per_s": v} for v in (4.0, 1.0, 3.0, 2.0)])["steps_per_s"] == 2.0


def _buckets(stage: str, counts: dict[float, float]) -> dict:
    return {("actionpipe_stage_latency_seconds_bucket", tuple(sorted({"stage": stage, "le": str(le)}.items()))): c
            for le, c in counts.items()}


def test_quantile_interpolates_within_the_bucket_that_holds_the_rank():
    samples = _buckets("embed", {0.01: 50, 0.1: 90, 1.0: 100, float("inf"): 100})
    assert histogram_quantile(samples, "actionpipe_stage_latency_seconds", 0.5, stage="embed") == pytest.approx(0.01)
    # rank 70 lies halfway between 50 (at 10 ms) and 90 (at 100 ms)
    assert histogram_quantile(samples, "actionpipe_stage_latency_seconds", 0.7, stage="embed") == pytest.approx(0.055)


def test_quantile_beyond_the_last_finite_bucket_reports_that_bound_and_empty_is_none():
    samples = _buckets("capture", {0.25: 90, float("inf"): 100})
    assert histogram_quantile(samples, "actionpipe_stage_latency_seconds", 0.99, stage="capture") == 0.25
    assert histogram_quantile(samples, "actionpipe_stage_latency_seconds", 0.5, stage="temporal") is None
