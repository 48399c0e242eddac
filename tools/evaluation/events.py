"""How well emitted action events match annotations: a start event is correct
when its class matches and it lies within ``offset_s`` of a not yet matched
annotated start of that class in the same stream.

Start events come from an events file (``run_pipeline.py --events-out``) or
are made from per-step scores by the pipeline's own detector
(``pipeline.events``): the events a run of the pipeline over the same streams
emits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.cli import UsageError
from tools.evaluation.annotations import ActionInstance


@dataclass(frozen=True)
class StartEvent:
    """An action's start as the pipeline announced it: which stream, which class, at what stream time."""

    stream: str
    action: str
    t: float


def match_starts(events: Sequence[StartEvent], truth: Sequence[ActionInstance], offset_s: float,
                 streams: set[str] | None = None) -> dict:
    """Greedy in time order: each event takes the nearest unmatched true start within the offset."""
    relevant = [i for i in truth if streams is None or i.video_id in streams]
    unmatched = {id(i): i for i in relevant}
    hits = 0
    for event in sorted(events, key=lambda e: (e.stream, e.t)):
        candidates = [
            i for i in unmatched.values()
            if i.video_id == event.stream and i.action == event.action and abs(i.start - event.t) <= offset_s
        ]
        if candidates:
            best = min(candidates, key=lambda i: abs(i.start - event.t))
            del unmatched[id(best)]
            hits += 1
    return {
        "true_starts": len(relevant),
        "start_events": len(events),
        "matched": hits,
        "recall": hits / len(relevant) if relevant else None,
        "precision": hits / len(events) if events else None,
    }


def read_start_events(path: Path) -> list[StartEvent]:
    """The start events of an events file (JSON lines; other kinds of event are skipped)."""
    if not path.is_file():
        raise UsageError(f"events file not found: {path}")
    events = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record["kind"] == "start":
                events.append(StartEvent(record["stream"], record["action"], float(record["t"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}:{lineno}: not an event line ({exc})") from exc
    return events


def events_from_scores(path: Path, model: Path | None = None) -> list[StartEvent]:
    """Start events the pipeline's detector makes from per-step scores: with the settings frozen in
    ``model``'s checkpoint when given (as the pipeline runs it), else the default ``events:`` config."""
    from engines.head_config import read_head_events
    from pipeline.config import EventsConfig, events_for_model
    from pipeline.events import ActionEventDetector
    from pipeline.scores import read_scores

    steps = read_scores(path)
    if not steps:
        raise UsageError(f"{path}: no steps")
    classes = tuple(steps[0].scores)
    settings = events_for_model(EventsConfig(), read_head_events(model) if model else None)
    detector = ActionEventDetector(classes, settings.hysteresis())
    events = []
    for step in sorted(steps, key=lambda s: (s.stream, s.t)):
        events.extend(detected_starts(detector, step.stream, step.t, step.scores))
    return events


def detected_starts(detector, stream: str, t: float, scores) -> list[StartEvent]:
    """The start events an ``ActionEventDetector`` emits on one step of a stream (its scores by class)."""
    return [StartEvent(event.stream, event.action, event.t)
            for event in detector.update(stream, t, scores, wall_time=0.0) if event.kind == "start"]
