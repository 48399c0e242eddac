"""Prometheus metrics of every stage, served by the supervisor from one endpoint.

Stages run in their own processes; prometheus_client's multiprocess mode
(one directory per run, set up by the supervisor before the stages start)
lets the supervisor's endpoint add up what every process recorded. Metric
objects are built per process (``StageMetrics``), never at import time.

Labels are bounded: ``stream`` is the operator's stream name (never a URL),
``reason``/``stage``/``kind`` come from fixed sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "actionpipe"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DROP_REASONS = ("sampling", "backpressure", "decode_error", "stale", "reorder_timeout", "late")


class MetricsSetupError(RuntimeError):
    pass


@dataclass
class StageMetrics:
    """Every metric a stage may touch; built inside the stage's process."""

    frames_captured: object
    frames_dropped: object
    frames_sent: object
    steps_processed: object
    events: object
    stage_latency: object
    end_to_end_latency: object
    batch_size: object
    queue_depth: object
    active_streams: object
    evictions: object
    implicit_starts: object

    @classmethod
    def create(cls) -> "StageMetrics":
        if not os.environ.get(MULTIPROC_ENV):
            raise MetricsSetupError(f"{MULTIPROC_ENV} is not set: stages must be started by the supervisor")
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...]):
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=None)

        return cls(
            frames_captured=counter("frames_captured_total", "Frames read from the source.", ("stream",)),
            frames_dropped=counter("frames_dropped_total", "Frames not processed, by reason.", ("stream", "reason")),
            frames_sent=counter("frames_sent_total", "Sampled frames sent to the embed stage.", ("stream",)),
            steps_processed=counter("steps_processed_total", "GRU steps scored.", ("stream",)),
            events=counter("events_total", "Action start/end events emitted.", ("stream", "action", "kind")),
            stage_latency=Histogram(
                f"{PREFIX}_stage_latency_seconds", "Time a frame spends in each stage.", ("stage",),
                buckets=LATENCY_BUCKETS_S, registry=None,
            ),
            end_to_end_latency=Histogram(
                f"{PREFIX}_end_to_end_latency_seconds", "Capture to scored step, per stream.", ("stream",),
                buckets=LATENCY_BUCKETS_S, registry=None,
            ),
            batch_size=Histogram(
                f"{PREFIX}_batch_size", "Frames per batch, per stage.", ("stage",), buckets=BATCH_BUCKETS, registry=None
            ),
            queue_depth=Gauge(
                f"{PREFIX}_queue_depth", "Items waiting inside a stage.", ("stage",), registry=None,
                multiprocess_mode="livesum",
            ),
            active_streams=Gauge(
                f"{PREFIX}_active_streams", "Streams holding GRU state.", registry=None, multiprocess_mode="livesum"
            ),
            evictions=counter("state_evictions_total", "Stream states freed for being idle.", ("stream",)),
            implicit_starts=counter(
                "implicit_starts_total", "Frames of an unknown stream without START, treated as START.", ("stream",)
            ),
        )


def build_registry(multiproc_dir: Path):
    """The supervisor's registry: sums what every stage process wrote."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiproc_dir))
    return registry


def mark_process_dead(pid: int, multiproc_dir: Path) -> None:
    """Drop a finished process's live gauges (its counters and histograms stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path=str(multiproc_dir))
