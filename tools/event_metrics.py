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
from pathlib import Path

from tools.cli import run
from tools.evaluation.annotations import read_annotations
from tools.evaluation.events import events_from_scores, match_starts, read_start_events


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
