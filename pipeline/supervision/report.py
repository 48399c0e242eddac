"""What a run says about itself: a row per stream (the control API, the live page, the Python API),
and at the end the run summary and its exit status.

Frame accounting: every frame a stream's capture read is sent or dropped
with a reason, and every frame sent is scored or dropped downstream. A
frame sent but neither scored nor counted downstream was inside a stage
process that died: the summary counts it as ``stage_crash``. When no stage
process died, nothing explains such a frame: it is counted the same way,
and listed in :attr:`RunSummary.losses` too (a loss in transit is a bug,
and the run must not call itself clean).

Outputs: per output (``sink``), the records delivered (and acknowledged),
failed and dropped, read from the same metrics
(:func:`~pipeline.metrics.read_output_counters`). Anything an output or the
overlay video lost is listed in :attr:`RunSummary.losses`. The overlay's own
drops count there too (``backpressure`` included: the overlay never holds up
scoring, so under load its video misses steps, and the run says so); with
only the live page, a view and no output, they are shown but are no loss.

Exit status (:attr:`RunSummary.exit_code`), however the run ended (by
itself, or stopped by a signal or the APIs and drained): 1 when a stage
could not run, every stream failed, or a second stop request cut the drain
short (or the drain overran ``supervision.stop_timeout_s``); else 3 when a
stream failed or an output or the overlay video lost anything; else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.metrics import OutputCounters, StreamCounters
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
    outputs: dict[str, dict] = field(default_factory=dict)  # sink -> delivered, errors, dropped by reason
    losses: list[str] = field(default_factory=list)  # what an output or the overlay video lost, one line each


def stream_row(entry: StreamEntry) -> dict:
    """What the supervisor knows of a stream (its URI without credentials)."""
    return {
        "name": entry.name, "uri": redact(entry.source.uri), "live": entry.live, "state": entry.state,
        "reason": entry.reason, "error": entry.error, "generation": entry.generation, "worker": entry.worker,
        "last_t": entry.last_t, "moved": entry.moved,
    }


def counter_fields(counters: StreamCounters | None, now_wall: float | None = None) -> dict:
    """A stream's frame counters over every process of the run (zeros before its first frame); with
    ``now_wall`` (unix time), also how old its last snapshot is."""
    counters = counters or StreamCounters()
    fields = {"captured": counters.captured, "sent": counters.sent, "processed": counters.processed,
              "dropped": dict(counters.dropped), "events": counters.events, "reconnects": counters.reconnects,
              "sequences": dict(counters.sequences), "overlay_frames": counters.overlay_frames,
              "overlay_dropped": dict(counters.overlay_dropped), "restored": dict(counters.restored),
              "restore_refused": dict(counters.restore_refused), "state_origin": counters.state_origin,
              "snapshot_time": counters.snapshot_time}
    if now_wall is not None:
        fields["state_age_s"] = (None if counters.snapshot_time is None
                                 else round(max(0.0, now_wall - counters.snapshot_time), 3))
    return fields


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
    """The rule of the module's docstring; a stop (``interrupted``) changes nothing in it."""
    states = [row["state"] for row in summary.streams.values()]
    failed = states.count(StreamState.FAILED.value)
    if summary.failure or (states and failed == len(states)):
        return 1  # a stage could not run, nothing worked, or the drain was cut short
    if failed or summary.losses:
        return 3  # it ran, but some streams failed or some output lost records
    return 0


def output_rows(outputs: dict[str, OutputCounters]) -> dict[str, dict]:
    return {sink: {"delivered": c.delivered, "errors": c.errors, "spooled": c.spooled,
                   "dropped": {reason: n for reason, n in sorted(c.dropped.items()) if n}}
            for sink, c in sorted(outputs.items())}


def losses(outputs: dict[str, dict], streams: dict[str, dict], overlay_video: bool) -> list[str]:
    """One line per output that lost records, and one for the overlay video if it missed steps."""
    lines = []
    for sink, row in outputs.items():
        dropped = sum(row["dropped"].values())
        if row["errors"] or dropped:
            detail = ", ".join(f"{reason}={n}" for reason, n in row["dropped"].items())
            lines.append(f"output {sink} lost {row['errors'] + dropped} record(s): {row['errors']} failed, "
                         f"{dropped} dropped{f' ({detail})' if detail else ''}")
    if overlay_video:
        missed: dict[str, int] = {}
        for row in streams.values():
            for reason, n in row["overlay_dropped"].items():
                missed[reason] = missed.get(reason, 0) + n
        if sum(missed.values()):
            detail = ", ".join(f"{reason}={n}" for reason, n in sorted(missed.items()) if n)
            lines.append(f"overlay video missed {sum(missed.values())} scored step(s) ({detail})")
    return lines


def summarise(entries: list[StreamEntry], counters: dict[str, StreamCounters], timings: dict[str, dict],
              engines: list[str], restarts: dict[str, int], interrupted: bool, failure: str,
              overlay_crashed: bool, outputs: dict[str, OutputCounters] | None = None,
              overlay_video: bool = False) -> tuple[RunSummary, dict[str, int]]:
    """The run's summary, and per stream the frames that died with a stage process."""
    summary = RunSummary(interrupted=interrupted, failure=failure, engines=sorted({e for e in engines if e}),
                         restarts={stage: n for stage, n in restarts.items() if n},
                         outputs=output_rows(outputs or {}))
    lost: dict[str, int] = {}
    for entry in entries:
        row, lost_here = summary_row(entry, counters.get(entry.name), timings.get(entry.name, {}), overlay_crashed)
        summary.streams[entry.name] = row
        if lost_here:
            lost[entry.name] = lost_here
    summary.losses = losses(summary.outputs, summary.streams, overlay_video)
    if not any(restarts.values()) and not failure:  # a cut-short drain loses what was in flight: said so
        summary.losses += [f"stream {name}: {n} frame(s) sent were neither scored nor dropped, and no stage died "
                           "(lost in transit: please report it, with the log)" for name, n in lost.items()]
    summary.exit_code = exit_code(summary)
    return summary, lost
