"""Prometheus metrics of every process, served by the supervisor from one endpoint.

Stages run in their own processes; prometheus_client's multiprocess mode
(one directory per run, set up by the supervisor before the stages start)
lets the supervisor's endpoint add up what every process recorded. A counter
a process wrote survives that process being killed, so the run's frame
accounting stays exact across stage crashes; the supervisor's end-of-run
summary is read from the same files (:func:`read_stream_counters`). Metric
objects are built per process, never at import time.

Labels are bounded: ``stream`` is the operator's stream name (never a URL),
``reason``/``stage``/``kind``/``state``/``sink`` come from fixed sets.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "actionpipe"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DROP_REASONS = ("sampling", "backpressure", "decode_error", "stale", "reorder_timeout", "late", "stage_crash")
STAGE_KINDS = ("capture", "embed", "temporal")


class MetricsSetupError(RuntimeError):
    pass


def _require_multiproc_dir() -> None:
    if not os.environ.get(MULTIPROC_ENV):
        raise MetricsSetupError(f"{MULTIPROC_ENV} is not set: stages must be started by the supervisor")


def _counter(name: str, doc: str, labels: tuple[str, ...]):
    from prometheus_client import Counter

    return Counter(f"{PREFIX}_{name}", doc, labels, registry=None)


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
    reconnects: object
    sequences_started: object
    sink_errors: object
    malformed_messages: object

    @classmethod
    def create(cls) -> "StageMetrics":
        _require_multiproc_dir()
        from prometheus_client import Gauge, Histogram

        return cls(
            frames_captured=_counter("frames_captured_total", "Frames read from the source (counted once their fate is decided).", ("stream",)),
            frames_dropped=_counter("frames_dropped_total", "Frames not processed, by reason.", ("stream", "reason")),
            frames_sent=_counter("frames_sent_total", "Sampled frames sent to the embed stage.", ("stream",)),
            steps_processed=_counter("steps_processed_total", "GRU steps scored.", ("stream",)),
            events=_counter("events_total", "Action start/end events emitted.", ("stream", "action", "kind")),
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
            evictions=_counter("state_evictions_total", "Stream states freed for being idle.", ("stream",)),
            implicit_starts=_counter(
                "implicit_starts_total", "Frames of an unknown stream without START, treated as START.", ("stream",)
            ),
            reconnects=_counter("reconnects_total", "Times a live stream dropped and was reconnected.", ("stream",)),
            sequences_started=_counter(
                "sequences_started_total", "Sequences begun (GRU state reset), by why.", ("stream", "reason")
            ),
            sink_errors=_counter(
                "sink_errors_total", "Outputs that failed to take a record (the record is lost to that sink only).",
                ("sink",),
            ),
            malformed_messages=_counter(
                "malformed_messages_total", "Messages on a stage's socket that did not follow the wire format.",
                ("stage",),
            ),
        )


@dataclass
class SupervisorMetrics:
    """What only the supervisor knows: stream states and stage restarts."""

    stream_state: object
    stage_restarts: object
    stages_up: object

    @classmethod
    def create(cls) -> "SupervisorMetrics":
        _require_multiproc_dir()
        from prometheus_client import Gauge

        return cls(
            stream_state=Gauge(
                f"{PREFIX}_stream_state", "1 for the state each stream is in (connecting, live, reconnecting, ended, failed).",
                ("stream", "state"), registry=None, multiprocess_mode="livesum",
            ),
            stage_restarts=_counter("stage_restarts_total", "Stage processes restarted after dying.", ("stage",)),
            stages_up=Gauge(
                f"{PREFIX}_stages_up", "Stage processes running, by kind.", ("kind",), registry=None,
                multiprocess_mode="livesum",
            ),
        )


def build_registry(multiproc_dir: Path):
    """The supervisor's registry: sums what every process wrote."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiproc_dir))
    return registry


def mark_process_dead(pid: int, multiproc_dir: Path) -> None:
    """Drop a finished process's live gauges (its counters and histograms stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path=str(multiproc_dir))


@dataclass
class StreamCounters:
    captured: int = 0
    sent: int = 0
    processed: int = 0
    events: int = 0
    reconnects: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sequences: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def read_stream_counters(registry) -> dict[str, StreamCounters]:
    """Per-stream totals over every process of the run, dead ones included."""
    counters: dict[str, StreamCounters] = defaultdict(StreamCounters)
    simple = {
        f"{PREFIX}_frames_captured_total": "captured",
        f"{PREFIX}_frames_sent_total": "sent",
        f"{PREFIX}_steps_processed_total": "processed",
        f"{PREFIX}_reconnects_total": "reconnects",
    }
    for family in registry.collect():
        for sample in family.samples:
            stream = sample.labels.get("stream")
            if stream is None:
                continue
            value = int(round(sample.value))
            if sample.name in simple:
                row = counters[stream]
                setattr(row, simple[sample.name], getattr(row, simple[sample.name]) + value)
            elif sample.name == f"{PREFIX}_frames_dropped_total" and value:
                counters[stream].dropped[sample.labels["reason"]] += value
            elif sample.name == f"{PREFIX}_events_total":
                counters[stream].events += value
            elif sample.name == f"{PREFIX}_sequences_started_total" and value:
                counters[stream].sequences[sample.labels["reason"]] += value
    return dict(counters)
