"""One stream's scores over time, with the true actions as bands and the events as marks: for judging a model by eye.

    python -m tools.plot_timeline --scores build/demo/scores.jsonl --annotations build/demo/annotations.txt \\
        --events build/demo/events.jsonl --stream sa777001_00000 --out timeline.png

One row per action class (background left out): the class's probability at
every step as a line, the annotated instances of that class as shaded bands,
and the pipeline's start (▲) and end (▼) events for that class as marks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.scores import read_scores
from tools.cli import UsageError, run
from tools.evaluation.annotations import read_annotations
from tools.evaluation.timeline import read_events, timeline_figure


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.plot_timeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", type=Path, required=True, help="per-step scores (run_pipeline.py --scores-out)")
    p.add_argument("--annotations", type=Path, required=True, help="ground truth: <video> <class> <start> <end> lines")
    p.add_argument("--stream", required=True, help="the stream (video id) to plot")
    p.add_argument("--events", type=Path, help="events (run_pipeline.py --events-out), drawn as marks")
    p.add_argument("--out", type=Path, required=True, help="image file (.png, .svg, .pdf)")
    args = p.parse_args(argv)
    steps = sorted((s for s in read_scores(args.scores) if s.stream == args.stream), key=lambda s: s.t)
    if not steps:
        known = sorted({s.stream for s in read_scores(args.scores)})
        raise UsageError(f"--stream {args.stream!r} has no steps in {args.scores}; streams there: "
                         f"{', '.join(known[:10])}{' ...' if len(known) > 10 else ''}")
    truth = [a for a in read_annotations(args.annotations) if a.video_id == args.stream]
    events = read_events(args.events, args.stream) if args.events else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = timeline_figure(steps, truth, events, args.stream)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: {len(steps)} steps, {len(truth)} annotated actions, {len(events)} events",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
