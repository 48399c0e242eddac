"""Prometheus metrics of every process, served by the supervisor from one endpoint.

Stages run in their own processes; prometheus_client's multiprocess mode
(one directory per run, set up by the supervisor before the stages start)
lets the supervisor's endpoint add up what every process recorded. A counter
a process wrote survives that process being killed, so the run's frame
accounting stays exact across stage crashes; the supervisor's end-of-run
summary is read from the same files (:func:`read_stream_counters`, and
:func:`read_output_counters` for the outputs). If a temp cleaner deletes the
folder, the supervisor makes it again and puts every file it held back
under its name (:mod:`pipeline.supervision.run_folder`): the collector reads
the folder as always, and no total drops. Metric objects are built per
process, never at import time.

Labels are bounded: ``stream`` is the operator's stream name (never a URL),
``reason``/``stage``/``kind``/``state``/``sink`` come from fixed sets.
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ActionPipeError

PREFIX = "actionpipe"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# How old a restored stream state is: under state.max_age_s (10 s by default), a longer one in a tail.
STATE_AGE_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
DROP_REASONS = ("sampling", "backpressure", "decode_error", "stale", "reorder_timeout", "late", "stage_crash")
STAGE_KINDS = ("capture", "embed", "temporal", "overlay")


class MetricsSetupError(ActionPipeError, RuntimeError):
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
    embed_batch_cost: object
    queue_depth: object
    active_streams: object
    evictions: object
    implicit_starts: object
    reconnects: object
    sequences_started: object
    sink_errors: object
    sink_dropped: object
    sink_delivered: object
    sink_spooled: object
    malformed_messages: object
    overlay_frames: object
    overlay_dropped: object
    state_restored: object
    state_restored_age: object
    state_restore_refused: object
    state_snapshots_saved: object
    state_snapshot_errors: object
    state_origin: object
    state_snapshot_time: object

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
            embed_batch_cost=Gauge(
                f"{PREFIX}_embed_batch_cost_seconds", "Engine seconds per frame an embed worker measured for each "
                "batch size, in the pipeline (it picks its batch sizes by them).", ("worker", "size"), registry=None,
                multiprocess_mode="livemax",
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
            sink_dropped=_counter(
                "sink_dropped_total", "Records a network output (webhook, MQTT) gave up: its buffer was full, the "
                "receiver refused them, or they were still unsent at shutdown.", ("sink", "reason"),
            ),
            sink_delivered=_counter(
                "sink_delivered_total", "Records a network output (webhook, MQTT) delivered and had acknowledged.",
                ("sink",),
            ),
            sink_spooled=_counter(
                "sink_spooled_total", "Records a network output could not deliver before a stop and wrote to its "
                "spool_dir for the next run (not lost).", ("sink",),
            ),
            malformed_messages=_counter(
                "malformed_messages_total", "Messages on a stage's socket that did not follow the wire format.",
                ("stage",),
            ),
            overlay_frames=_counter(
                "overlay_frames_total", "Scored steps drawn as annotated overlay frames (video, live page).", ("stream",),
            ),
            overlay_dropped=_counter(
                "overlay_dropped_total", "Scored steps the overlay did not draw: a frame or its scores could not be "
                "handed to the overlay stage at once (backpressure), or one never met the other (unmatched). "
                "Scoring is never held up for the overlay.", ("stream", "reason"),
            ),
            state_restored=_counter(
                "state_restored_total", "Streams continued from a snapshot of their state, by origin (crash: the "
                "temporal worker was restarted; restart: a new run with the same state.dir).", ("stream", "origin"),
            ),
            state_restored_age=Histogram(
                f"{PREFIX}_state_restored_age_seconds", "Age of a stream state when it was restored (the steps "
                "since were lost for a live stream).", ("origin",), buckets=STATE_AGE_BUCKETS_S, registry=None,
            ),
            state_restore_refused=_counter(
                "state_restore_refused_total", "Snapshots not restored, by reason (too_old, other_head, "
                "other_backbone, other_generation, corrupt, truncated, ...): the stream started a new sequence.",
                ("stream", "reason"),
            ),
            state_snapshots_saved=_counter("state_snapshots_saved_total", "Stream snapshots written to the store.", ()),
            state_origin=Gauge(
                f"{PREFIX}_state_origin", "Where each stream's state came from at its sequence's start: 0 fresh, "
                "1 restored from the previous run, 2 restored after a temporal crash.", ("stream",), registry=None,
                multiprocess_mode="mostrecent",
            ),
            state_snapshot_time=Gauge(
                f"{PREFIX}_state_snapshot_time_seconds", "Unix time of each stream's last snapshot written.",
                ("stream",), registry=None, multiprocess_mode="mostrecent",
            ),
            state_snapshot_errors=_counter(
                "state_snapshot_errors_total", "Stream snapshots that could not be written (the previous one stays).",
                ("stream",),
            ),
        )


@dataclass(frozen=True)
class SupervisorState:
    """What the supervisor's own metrics show at a scrape (it is one process: no files)."""

    stream_states: dict[str, str]  # stream -> connecting, live, reconnecting, ended, failed
    stream_reasons: dict[str, str]  # stream -> why it is in that state (needs_attention, flapping, ...)
    stage_restarts: dict[str, int]  # every stage, 0 included
    stages_up: dict[str, int]  # kind -> processes running
    lost_with_stages: dict[tuple[str, str], int]  # (stream, "stage_crash") -> frames lost with a dead stage


# Reasons a stream keeps being retried that an operator should hear about: each is a gauge per stream.
TROUBLE_GAUGES = {
    "needs_attention": "1 while the stream's server answers what usually needs a person (401, 403, 404): it is "
                       "retried slowly (reconnect.slow_s).",
    "flapping": "1 while the stream keeps dropping before it has been stable (reconnect.stable_s): it is shown as "
                "reconnecting and its backoff keeps growing.",
}


def stage_files_collector(multiproc_dir: Path, registry=None):
    """prometheus_client's collector of the stages' metrics files, minus files still being created.

    A stage process creates its file empty and only then sizes it; a scrape (or the supervisor's own
    reading of the counters) that opens it in between would fail on the empty file. Such a file holds
    no samples yet, so leaving it out is exact; files only grow, so one seen sized stays readable.
    """
    from prometheus_client.multiprocess import MultiProcessCollector

    class StartedFilesCollector(MultiProcessCollector):
        def collect(self):
            files = []
            for path in glob.glob(os.path.join(self._path, "*.db")):
                try:
                    if os.path.getsize(path) >= 8:  # the header that says how much of the file is used
                        files.append(path)
                except FileNotFoundError:
                    continue  # a dead process's live gauges, removed since the listing
            return self.merge(files, accumulate=True)

    return StartedFilesCollector(registry, path=str(multiproc_dir))


class SupervisorCollector:
    """The supervisor's own metrics, from ``state()`` (a :class:`SupervisorState`) at each scrape, beside
    what every stage process wrote. Frames the supervisor knows were lost with a dead stage are added
    into ``actionpipe_frames_dropped_total``."""

    def __init__(self, multiproc_dir: Path, state) -> None:
        self._stages = stage_files_collector(multiproc_dir)
        self._state = state

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from pipeline.sources.lifecycle import STATES

        now: SupervisorState = self._state()
        extra_drops = now.lost_with_stages
        for family in self._stages.collect():
            if family.name == f"{PREFIX}_frames_dropped" and extra_drops:
                family = _with_extra_drops(family, extra_drops)
            yield family
        if extra_drops and not any(f.name == f"{PREFIX}_frames_dropped" for f in self._stages.collect()):
            family = CounterMetricFamily(f"{PREFIX}_frames_dropped", "Frames not processed, by reason.",
                                         labels=("stream", "reason"))
            for (stream, reason), value in sorted(extra_drops.items()):
                family.add_metric((stream, reason), value)
            yield family
        state = GaugeMetricFamily(f"{PREFIX}_stream_state",
                                  "1 for the state each stream is in (connecting, live, reconnecting, ended, failed).",
                                  labels=("stream", "state"))
        for stream, current in sorted(now.stream_states.items()):
            for name in STATES:
                state.add_metric((stream, name), 1.0 if name == current else 0.0)
        yield state
        for reason, documentation in TROUBLE_GAUGES.items():
            trouble = GaugeMetricFamily(f"{PREFIX}_stream_{reason}", documentation, labels=("stream",))
            for stream in sorted(now.stream_states):
                trouble.add_metric((stream,), 1.0 if now.stream_reasons.get(stream) == reason else 0.0)
            yield trouble
        restarted = CounterMetricFamily(f"{PREFIX}_stage_restarts", "Stage processes restarted after dying.",
                                        labels=("stage",))
        for stage, count in sorted(now.stage_restarts.items()):
            restarted.add_metric((stage,), count)
        yield restarted
        up = GaugeMetricFamily(f"{PREFIX}_stages_up", "Stage processes running, by kind.", labels=("kind",))
        for kind, count in sorted(now.stages_up.items()):
            up.add_metric((kind,), count)
        yield up


def _with_extra_drops(family, extra_drops: dict):
    from prometheus_client.core import CounterMetricFamily

    totals: dict[tuple[str, str], float] = {}
    for sample in family.samples:
        if sample.name.endswith("_total"):
            key = (sample.labels["stream"], sample.labels["reason"])
            totals[key] = totals.get(key, 0.0) + sample.value
    for key, value in extra_drops.items():
        totals[key] = totals.get(key, 0.0) + value
    merged = CounterMetricFamily(family.name, family.documentation, labels=("stream", "reason"))
    for (stream, reason), value in sorted(totals.items()):
        merged.add_metric((stream, reason), value)
    return merged


def build_registry(multiproc_dir: Path, supervisor_state=None):
    """The supervisor's registry: sums what every process wrote, plus the supervisor's own state."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    if supervisor_state is None:
        stage_files_collector(multiproc_dir, registry)
    else:
        registry.register(SupervisorCollector(multiproc_dir, supervisor_state))
    return registry


@contextmanager
def collected_in(multiproc_dir: Path) -> Iterator[None]:
    """While inside, metrics of this process and the stages it starts are written to ``multiproc_dir``
    (prometheus_client reads the folder from the environment); the environment is restored after."""
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(multiproc_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous


def mark_process_dead(pid: int, multiproc_dir: Path) -> None:
    """Drop a finished process's live gauges (its counters and histograms stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path=str(multiproc_dir))


# The values of actionpipe_state_origin, in order.
STATE_ORIGINS = ("fresh", "restored", "restored after crash", "restored after failover", "moved from another node")
# The actionpipe_state_origin gauge's value for each restore origin (its index in STATE_ORIGINS).
ORIGIN_GAUGE = {"restart": 1, "crash": 2, "failover": 3, "move": 4}


@dataclass
class StreamCounters:
    captured: int = 0
    sent: int = 0
    processed: int = 0
    events: int = 0
    reconnects: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sequences: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    overlay_frames: int = 0
    overlay_dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    restored: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by origin: crash, restart
    restore_refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by reason
    state_origin: str = "fresh"  # STATE_ORIGINS: where its state came from at its sequence's start
    snapshot_time: float | None = None  # unix time of its last snapshot written


def read_stream_counters(registry) -> dict[str, StreamCounters]:
    """Per-stream totals over every process of the run, dead ones included."""
    counters: dict[str, StreamCounters] = defaultdict(StreamCounters)
    simple = {
        f"{PREFIX}_frames_captured_total": "captured",
        f"{PREFIX}_frames_sent_total": "sent",
        f"{PREFIX}_steps_processed_total": "processed",
        f"{PREFIX}_reconnects_total": "reconnects",
        f"{PREFIX}_overlay_frames_total": "overlay_frames",
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
            elif sample.name == f"{PREFIX}_overlay_dropped_total" and value:
                counters[stream].overlay_dropped[sample.labels["reason"]] += value
            elif sample.name == f"{PREFIX}_state_origin":
                counters[stream].state_origin = STATE_ORIGINS[min(max(value, 0), len(STATE_ORIGINS) - 1)]
            elif sample.name == f"{PREFIX}_state_snapshot_time_seconds" and sample.value > 0:
                counters[stream].snapshot_time = sample.value
            elif sample.name == f"{PREFIX}_state_restored_total" and value:
                counters[stream].restored[sample.labels["origin"]] += value
            elif sample.name == f"{PREFIX}_state_restore_refused_total" and value:
                counters[stream].restore_refused[sample.labels["reason"]] += value
    return dict(counters)


@dataclass
class OutputCounters:
    """What one output did with the records it was given, over every process of the run."""

    delivered: int = 0  # delivered and acknowledged (network outputs)
    errors: int = 0  # records it failed to take
    spooled: int = 0  # unsent at a stop, kept in spool_dir for the next run (not lost)
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # given up, by reason

    @property
    def lost(self) -> int:
        return self.errors + sum(self.dropped.values())


def read_output_counters(registry) -> dict[str, OutputCounters]:
    """Per output (``sink`` label): delivered, failed and dropped records, as the outputs counted them."""
    counters: dict[str, OutputCounters] = defaultdict(OutputCounters)
    for family in registry.collect():
        for sample in family.samples:
            sink = sample.labels.get("sink")
            if sink is None:
                continue
            value = round(sample.value)
            if sample.name == f"{PREFIX}_sink_delivered_total":
                counters[sink].delivered += value
            elif sample.name == f"{PREFIX}_sink_errors_total":
                counters[sink].errors += value
            elif sample.name == f"{PREFIX}_sink_spooled_total":
                counters[sink].spooled += value
            elif sample.name == f"{PREFIX}_sink_dropped_total":
                row = counters[sink]  # listed even when it dropped nothing
                if value:
                    row.dropped[sample.labels["reason"]] += value
    return dict(counters)
