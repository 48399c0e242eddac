"""How well emitted action events match annotations: a start event is correct
when its class matches and it lies within ``offset_s`` of a not yet matched
annotated start of that class in the same stream.

    python -m tools.event_metrics --events EVENTS.jsonl --annotations ANN.txt [--offset 1.0]
    python -m tools.event_metrics --scores SCORES.jsonl --annotations ANN.txt

With ``--scores``, events are made from per-step scores by the pipeline's own
detector (``pipeline.events``), with the settings frozen in ``--model``'s
checkpoint when given, else the default ``events:`` config: the events a run
of the pipeline over the same streams emits.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.evaluation.annotations import ActionInstance, read_annotations
from tools.cli import UsageError, run


@dataclass(frozen=True)
class StartEvent:
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
        for event in detector.update(step.stream, step.t, step.scores, wall_time=0.0):
            if event.kind == "start":
                events.append(StartEvent(event.stream, event.action, event.t))
    return events


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.event_metrics", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, help="events JSON lines written by run_pipeline.py --events-out")
    source.add_argument("--scores", type=Path, help="per-step scores: run the pipeline's event detector over them")
    p.add_argument("--annotations", type=Path, required=True)
    p.add_argument("--offset", type=float, default=1.0, help="seconds (default 1.0)")
    p.add_argument("--model", type=Path, help="with --scores: use the detector settings frozen in this head's checkpoint")
    args = p.parse_args(argv)
    if args.events:
        events = read_start_events(args.events)
        streams = {e.stream for e in events} or None
    else:
        from pipeline.scores import read_scores

        events = events_from_scores(args.scores, args.model)
        streams = {s.stream for s in read_scores(args.scores)}
    truth = read_annotations(args.annotations)
    print(json.dumps(match_starts(events, truth, args.offset, streams=streams), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
