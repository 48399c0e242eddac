"""Choose the event detector's settings for a head on its validation streams.

The detector (``pipeline.events``: hysteresis thresholds, steps to confirm an
action's start and end, warm-up, the onset level a start is dated back to)
turns per-step probabilities into start and end events. The settings that give the best start-event F1 within 1 s on the
validation streams are frozen in the checkpoint's metadata; the pipeline runs
with them unless the user's ``events:`` config says otherwise.

    python -m tools.tune_events --model HEAD --features VAL_FEATURES --annotations ANN.txt [--write]
    python -m tools.tune_events --model HEAD --features TRAIN_FEATURES --annotations ANN.txt ... \
        --validation-split [--write]

``--validation-split`` keeps only the streams that the head's training held out
for validation (the fraction and seed in its checkpoint's training record), so
the features folder it was trained from can be given as it is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.evaluation.annotations import ActionInstance, read_annotations
from tools.cli import UsageError, run
from tools.evaluation.events import StartEvent, match_starts

ON_THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
# Off and min-off only decide when a class may start again; two values of each cover that.
OFF_THRESHOLDS = (0.15, 0.3)
MIN_ON_STEPS = (1, 2, 3)
MIN_OFF_STEPS = (1, 2)
ONSET_THRESHOLDS = (None, 0.1, 0.2, 0.3)  # None: a start is dated at its first confirming step
WARMUP_STEPS = 2
OFFSET_S = 1.0


@dataclass(frozen=True)
class ScoredStream:
    stream: str
    times: np.ndarray  # [T]
    probs: np.ndarray  # [T, C]


def start_events(streams: Sequence[ScoredStream], classes: Sequence[str], settings: dict) -> list[StartEvent]:
    from pipeline.config import EventsConfig
    from pipeline.events import ActionEventDetector

    detector = ActionEventDetector(classes, EventsConfig(**settings).hysteresis())
    events = []
    for s in streams:
        for t, row in zip(s.times.tolist(), np.asarray(s.probs, dtype=np.float64)):
            for event in detector.update(s.stream, t, row, wall_time=0.0):
                if event.kind == "start":
                    events.append(StartEvent(event.stream, event.action, event.t))
    return events


def candidates() -> list[dict]:
    return [
        {"on_threshold": on, "off_threshold": off, "min_on_steps": n_on, "min_off_steps": n_off,
         "warmup_steps": WARMUP_STEPS, **({} if onset is None else {"onset_threshold": onset})}
        for on, off, n_on, n_off, onset in itertools.product(
            ON_THRESHOLDS, OFF_THRESHOLDS, MIN_ON_STEPS, MIN_OFF_STEPS, ONSET_THRESHOLDS)
        if off < on and (onset is None or onset <= on)
    ]


def tune(streams: Sequence[ScoredStream], classes: Sequence[str], truth: Sequence[ActionInstance]) -> tuple[dict, dict]:
    """The settings with the best start F1 (ties: higher precision, then the earlier candidate), and their figures."""
    ids = {s.stream for s in streams}
    best: tuple[tuple, dict, dict] | None = None
    for settings in candidates():
        figures = match_starts(start_events(streams, classes, settings), truth, OFFSET_S, streams=ids)
        precision, recall = figures["precision"] or 0.0, figures["recall"] or 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        key = (round(f1, 6), round(precision, 6))
        if best is None or key > best[0]:
            best = (key, settings, {**figures, "f1": f1})
    assert best is not None
    return best[1], best[2]


def held_out_for_validation(features: Sequence, metadata: dict[str, str], model: Path) -> list:
    """The streams of ``features`` that the head's training kept for validation (tools.train_head's split)."""
    from tools.train_head import split_streams

    try:
        record = json.loads(metadata["training"])["train_config"]
        fraction, seed = float(record["val_fraction"]), int(record["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--validation-split: {model} carries no training record with val_fraction and seed "
                         f"({exc!r}); give --features of the validation streams instead") from None
    held_out = split_streams(features, fraction, seed)[1]
    if not held_out:
        raise UsageError(f"--validation-split: none of the {len(features)} streams was held out by {model}'s "
                         f"training (val_fraction {fraction}, seed {seed})")
    return held_out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.tune_events", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--features", type=Path, required=True, help="validation streams' feature caches")
    p.add_argument("--annotations", type=Path, nargs="+", required=True)
    p.add_argument("--validation-split", action="store_true",
                   help="use only the streams the head's training held out for validation")
    p.add_argument("--write", action="store_true", help="freeze the chosen settings in the checkpoint")
    args = p.parse_args(argv)
    from engines.head_config import EVENTS_METADATA_KEY
    from engines.temporal_head import load_head, save_head
    from tools.training.features_cache import load_feature_dir
    from tools.evaluation.offline import score_steps

    head, metadata = load_head(args.model)
    truth = [i for path in args.annotations for i in read_annotations(path)]
    features = load_feature_dir(args.features)
    annotated = {i.video_id for i in truth}
    chosen = [f for f in features.values() if f.video_id in annotated]
    if not chosen:
        raise UsageError("no stream of --features has annotations in --annotations")
    if args.validation_split:
        chosen = held_out_for_validation(chosen, metadata, args.model)
    streams = [ScoredStream(f.video_id, f.times, score_steps(head, f.embedding, f.stats)) for f in chosen]
    settings, figures = tune(streams, head.config.classes, truth)
    print(json.dumps({"events": settings, "validation": figures}, indent=2))
    if args.write:
        extra = {k: v for k, v in metadata.items() if k not in ("format", "head")}
        extra[EVENTS_METADATA_KEY] = json.dumps(settings, sort_keys=True)
        save_head(args.model, head, extra)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
