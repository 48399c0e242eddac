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


def _result(kind: dict) -> dict:
    machine = {"cpu": "test CPU", "cores": 2, "memory_gb": 1.0, "python": "3.11", "opencv": "5", "onnxruntime": "1",
               "gpu": "none", "commit": "abc"}
    return {"date": "2026-12-03 16:00 UTC", "command": "python -m tools.benchmark", "machine": machine,
            "step_rate": 4.0, "capacity_seconds": 60.0, "kinds": {"360p5": kind}}


def _kind(with_rounds: bool) -> dict:
    kind = {"decode": {"frames_per_s": 250.0, "steps_per_s": 200.0, "cpu_s_per_step": 0.005},
            "engine_best": {"threads": 1, "spinning": False, "batch": 2, "frames_per_s": 160.0, "cpu_s_per_frame": 0.006},
            "ideal_steps_per_s": 2 / 0.011,
            "pipeline": [{"streams": 4, "steps_per_s": 120.0, "runs": [120.0], "vs_ideal": 120.0 / (2 / 0.011),
                          "startup_s": 4.0, "shutdown_s": 0.7}],
            "capacity": {"streams": 20, "clocks": "independent", "best": None,
                         "trials": [{"streams": 20, "held": True, "e2e_p99_ms": 200.0, "dropped": {}}]}}
    if with_rounds:
        kind["engine_rounds"] = {"threads": 1, "spinning": False, "batch": 2, "frames_per_s": 120.0,
                                 "cpu_s_per_frame": 0.008, "runs": [8.2, 8.0, 7.1]}
        kind["ideal_rounds_steps_per_s"] = 2 / 0.013
        kind["pipeline"][0]["vs_ideal_rounds"] = 120.0 / (2 / 0.013)
    return kind


def test_the_report_gives_the_ideal_both_with_the_sweeps_best_engine_and_with_its_median_over_the_rounds():
    from tools.bench.report import markdown

    text = markdown(_result(_kind(with_rounds=True)))
    assert "| ideal: 2 cores / (decode + engine CPU per step) | 181.8 | |" in text
    assert "median; CPU ms 8.20, 8.00, 7.10) | 120.0 | 8.00 |" in text
    assert "| ideal with that median | 153.8 | |" in text
    assert "| 4 | 120.0 | 120.0 | 0.66 | 0.78 | - | 4.00 | 0.70 |" in text
    assert "**20 streams** = 0.44 of the ideal 45.5 (0.52 of 38.5 with the engine's median)" in text


def test_a_result_from_before_the_engine_was_timed_each_round_still_reports():
    from tools.bench.report import markdown

    text = markdown(_result(_kind(with_rounds=False)))
    assert "ideal with that median" not in text
    assert "| 4 | 120.0 | 120.0 | 0.66 | - | - | 4.00 | 0.70 |" in text
    assert "**20 streams** = 0.44 of the ideal 45.5 held" in text


@pytest.mark.parametrize("nvdec", [True, False])
def test_the_gpu_rows_say_which_decoder_the_capacity_trials_used(nvdec):
    """The GPU part's report (its figures come from a GPU machine: docs/benchmarks.md, 2026-12-04). Without
    NVDEC the trials decode with OpenCV, and the report says so rather than losing the GPU's other figures."""
    from tools.bench.report import markdown

    result = _result(_kind(with_rounds=True))
    result["gpu"] = {
        "gpu": "NVIDIA H200", "gflop_per_frame": 0.77,
        "engine": {"backend": "torch-cuda-fp16", "rows": [{"batch": 32, "frames_per_s": 8933.0, "tflops": 6.86,
                                                           "of_peak": 0.007}]},
        "gru": [{"streams": 16, "ms_per_step": 0.91}],
        "nvdec": {"frames_per_s": 558.0} if nvdec else {"not_measured": "PyNvVideoCodec is not installed"},
        "capacity_1080p30": {"streams": 12, "decoder": "nvdec" if nvdec else "opencv"},
    }
    text = markdown(result)
    assert "| 32 | 8933 | 6.86 | 0.007 |" in text and "16 streams 0.91 ms" in text
    if nvdec:
        assert "NVDEC decode (1080p30): 558 frames/s." in text
        assert "held with p99 <= 100 ms (NVDEC, FP16 engine, GRU on the GPU): **12**" in text
    else:
        assert "NVDEC decode (1080p30): not measured (PyNvVideoCodec is not installed)." in text
        assert "held with p99 <= 100 ms (OpenCV decode on the CPU, FP16 engine, GRU on the GPU): **12**" in text
