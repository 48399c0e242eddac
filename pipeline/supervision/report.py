"""What a run says about itself: a row per stream (the control API, the live page, the Python API),
and at the end the run summary and its exit status.

Frame accounting: every frame a stream's capture read is sent or dropped
with a reason, and every frame sent is scored or dropped downstream. A
frame sent but neither scored nor counted downstream was inside a stage
process that died: the summary counts it as ``stage_crash``.

Exit status (:attr:`RunSummary.exit_code`): 0 when the run did its job (or
was stopped and drained) and no stream failed; 1 when a stage could not
run, every stream failed, or a second stop request cut the drain short; 3
when it finished with some streams failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.metrics import StreamCounters
from pipeline.sources.lifecycle import StreamState
from pipeline.sources.uri import redact
from pipeline.supervision.registry import StreamEntry

DOWNSTREAM_DROP_REASONS = ("late", "reorder_timeout", "stage_crash")
TIMING_FIELDS = ("step_rate_hz", "latency_p50_s", "latency_p99_s", "first_step_wall", "last_step_wall")


@dataclass
class RunSummary:
    streams: dict[str, dict] = field(default_factory=dict)
    engines: list[str] = field(default_factory=list)
    metrics_url: str | None = None
    control_url: str | None = None
    interrupted: bool = False
    exit_code: int = 0
    failure: str = ""
    restarts: dict[str, int] = field(default_factory=dict)


def stream_row(entry: StreamEntry) -> dict:
    """What the supervisor knows of a stream (its URI without credentials)."""
    return {
        "name": entry.name, "uri": redact(entry.source.uri), "live": entry.live, "state": entry.state,
        "reason": entry.reason, "error": entry.error, "generation": entry.generation, "worker": entry.worker,
        "last_t": entry.last_t,
    }


def counter_fields(counters: StreamCounters | None) -> dict:
    """A stream's frame counters over every process of the run (zeros before its first frame)."""
    counters = counters or StreamCounters()
    return {"captured": counters.captured, "sent": counters.sent, "processed": counters.processed,
            "dropped": dict(counters.dropped), "events": counters.events, "reconnects": counters.reconnects,
            "sequences": dict(counters.sequences), "overlay_frames": counters.overlay_frames,
            "overlay_dropped": dict(counters.overlay_dropped)}


def summary_row(entry: StreamEntry, counters: StreamCounters | None, timing: dict,
                overlay_crashed: bool) -> tuple[dict, int]:
    """A stream's line of the run summary, and how many of its frames died with a stage process."""
    row = {**stream_row(entry), **counter_fields(counters)}
    downstream = sum(row["dropped"].get(r, 0) for r in DOWNSTREAM_DROP_REASONS)
    lost = max(0, row["sent"] - row["processed"] - downstream)
    if lost:
        row["dropped"]["stage_crash"] = row["dropped"].get("stage_crash", 0) + lost
    if overlay_crashed:
        missing = row["processed"] - row["overlay_frames"] - sum(row["overlay_dropped"].values())
        if missing > 0:  # scored, but held by an overlay process that died
            row["overlay_dropped"]["stage_crash"] = missing
    for key in TIMING_FIELDS:
        row[key] = timing.get(key)
    return row, lost


def exit_code(summary: RunSummary) -> int:
    states = [row["state"] for row in summary.streams.values()]
    failed = states.count(StreamState.FAILED.value)
    if summary.failure or (states and failed == len(states)):
        return 1  # a stage could not run, or nothing worked
    if failed and not summary.interrupted:
        return 3  # finished on its own, but some streams failed
    return 0


def summarise(entries: list[StreamEntry], counters: dict[str, StreamCounters], timings: dict[str, dict],
              engines: list[str], restarts: dict[str, int], interrupted: bool, failure: str,
              overlay_crashed: bool) -> tuple[RunSummary, dict[str, int]]:
    """The run's summary, and per stream the frames that died with a stage process."""
    summary = RunSummary(interrupted=interrupted, failure=failure, engines=sorted({e for e in engines if e}),
                         restarts={stage: n for stage, n in restarts.items() if n})
    lost: dict[str, int] = {}
    for entry in entries:
        row, lost_here = summary_row(entry, counters.get(entry.name), timings.get(entry.name, {}), overlay_crashed)
        summary.streams[entry.name] = row
        if lost_here:
            lost[entry.name] = lost_here
    summary.exit_code = exit_code(summary)
    return summary, lost
