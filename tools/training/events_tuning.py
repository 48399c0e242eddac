"""Choosing the event detector's settings for a head on its validation streams.

The detector (``pipeline.events``: hysteresis thresholds, steps to confirm an
action's start and end, warm-up, the onset level a start is dated back to)
turns per-step probabilities into start and end events. The settings that
give the best start-event F1 within 1 s on the validation streams are frozen
in the checkpoint's metadata (``python -m tools.tune_events``, and
``tools.train_head`` after training); the pipeline runs with them unless the
user's ``events:`` config says otherwise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.cli import UsageError
from tools.evaluation.annotations import ActionInstance
from tools.evaluation.events import StartEvent, detected_starts, match_starts
from tools.training.dataset import split_streams

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
    """One stream's class probabilities at each step, as a head scored it."""

    stream: str
    times: np.ndarray  # [T]
    probs: np.ndarray  # [T, C]


def start_events(streams: Sequence[ScoredStream], classes: Sequence[str], settings: dict) -> list[StartEvent]:
    """The start events the pipeline's detector with ``settings`` emits over the streams."""
    from pipeline.config import EventsConfig
    from pipeline.events import ActionEventDetector

    detector = ActionEventDetector(classes, EventsConfig(**settings).hysteresis())
    events = []
    for s in streams:
        for t, row in zip(s.times.tolist(), np.asarray(s.probs, dtype=np.float64)):
            events.extend(detected_starts(detector, s.stream, t, row))
    return events


def candidates() -> list[dict]:
    """Every combination of settings the search tries (off below on, onset at most on)."""
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
    """The streams of ``features`` that the head's training kept for validation (the split of its training)."""
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
