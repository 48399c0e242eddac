"""Online action detection metrics (docs/synthactions.md, "How results are scored").

- per-frame AP and calibrated AP (TVSeries, De Geest et al. 2016) of each
  action class's score over all steps of all streams;
- point-level start AP: starts emitted where the argmax class changes, matched
  to true starts within an offset;
- mirror-pair accuracy.

Pure functions over numpy arrays and records; reading files is the caller's job.

Ties in score: steps are ranked by a stable sort on (score descending,
label ascending), i.e. within a group of equal scores the negatives come
first. Positives never gain from a tie, and the result does not depend on
the order in which steps were given (a constant score earns less than the
class's base rate, not more).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from pipeline.errors import ActionPipeError
from pipeline.scores import StepScores
from tools.evaluation.annotations import (
    BACKGROUND,
    SYNTH_ACTIONS_CLASSES,
    SYNTH_ACTIONS_MIRROR_PAIRS,
    ActionInstance,
    group_by_video,
    label_at,
)

POINT_OFFSETS_S: tuple[float, ...] = (1.0, 2.0)


class MetricsInputError(ActionPipeError, ValueError):
    """Arrays or records given to a metric that do not fit together."""


class EvaluationError(ActionPipeError, ValueError):
    """Scores and annotations that cannot be evaluated against each other."""


@dataclass(frozen=True)
class PredictedStart:
    stream: str
    action: str
    t: float
    confidence: float


def _ranked_labels(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise MetricsInputError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise MetricsInputError("scores must be finite")
    if not np.isin(y, (0, 1)).all():
        raise MetricsInputError("labels must be 0/1 or boolean")
    y = y.astype(bool)
    # np.lexsort sorts by the last key first and is stable: score descending, then negatives first.
    return y[np.lexsort((y, -s))]


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Non-interpolated AP: mean over positives of the precision at their rank; nan without positives."""
    ranked = _ranked_labels(scores, labels)
    num_pos = int(ranked.sum())
    if num_pos == 0:
        return math.nan
    tp = np.cumsum(ranked)
    precision = tp / np.arange(1, ranked.size + 1)
    return float(precision[ranked].sum() / num_pos)


def calibrated_average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """TVSeries cAP: precision as if positives and negatives were equally frequent; nan without positives.

    With w = #negatives / #positives, cPrec_k = TP_k / (TP_k + FP_k / w); cAP
    is the sum of cPrec at each positive's rank divided by #positives.
    """
    ranked = _ranked_labels(scores, labels)
    num_pos = int(ranked.sum())
    if num_pos == 0:
        return math.nan
    num_neg = ranked.size - num_pos
    if num_neg == 0:
        # FP_k = 0 at every rank, so every calibrated precision is 1 (the formula reads 0/0).
        return 1.0
    w = num_neg / num_pos
    tp = np.cumsum(ranked)
    fp = np.arange(1, ranked.size + 1) - tp
    calibrated = w * tp / (w * tp + fp)
    return float(calibrated[ranked].sum() / num_pos)


def extract_starts(
    times: ArrayLike,
    class_scores: ArrayLike,
    class_names: Sequence[str],
    background: str = BACKGROUND,
    *,
    stream: str = "",
) -> list[PredictedStart]:
    """One stream's steps (time order) -> predicted action starts, ODAS-style.

    A start of class c is emitted at step i when c (not background) is the
    argmax at step i and was not the argmax at step i-1 (or i == 0); its
    confidence is the score of c at step i. Argmax ties go to the class listed
    first in ``class_names``.
    """
    t = np.asarray(times, dtype=float)
    if t.ndim != 1:
        raise MetricsInputError(f"times must be 1-D, got shape {t.shape}")
    if t.size == 0:
        return []
    s = np.asarray(class_scores, dtype=float)
    if s.shape != (t.size, len(class_names)):
        raise MetricsInputError(
            f"class_scores must have shape (steps, classes) = {(t.size, len(class_names))}, got {s.shape}"
        )
    if np.any(np.diff(t) <= 0):
        raise MetricsInputError(f"stream {stream!r}: step times must be strictly increasing")
    if background not in class_names:
        raise MetricsInputError(f"background class {background!r} not in {list(class_names)}")
    background_index = list(class_names).index(background)
    winners = s.argmax(axis=1)
    return [
        PredictedStart(stream, class_names[c], float(t[i]), float(s[i, c]))
        for i, c in enumerate(winners)
        if c != background_index and (i == 0 or winners[i - 1] != c)
    ]


def _point_ap_one_class(
    predicted: Sequence[PredictedStart], truths: Sequence[ActionInstance], offset_s: float
) -> float:
    if not truths:
        return math.nan
    unmatched = {stream: [inst.start for inst in items] for stream, items in group_by_video(truths).items()}
    tp = 0
    precision_sum = 0.0
    # sorted() is stable: equal confidences keep the given order.
    for rank, pred in enumerate(sorted(predicted, key=lambda p: -p.confidence), start=1):
        candidates = unmatched.get(pred.stream, [])
        # min() keeps the first of equally near starts, i.e. the earlier one (lists are time-sorted).
        nearest = min(candidates, key=lambda start: abs(start - pred.t), default=None)
        if nearest is not None and abs(nearest - pred.t) <= offset_s:
            candidates.remove(nearest)
            tp += 1
            precision_sum += tp / rank
    return precision_sum / len(truths)


def point_level_ap(
    predicted_starts: Sequence[PredictedStart],
    true_starts: Sequence[ActionInstance],
    offset_s: float,
    classes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Per-class point-level start AP (nan for a class without true starts).

    Predictions of a class, pooled over streams, are taken by confidence
    descending; each one is a true positive when a not yet matched true start
    of its class in its stream lies within ``offset_s`` (the nearest such start
    is consumed), else a false positive. AP = sum over true positives of the
    precision at their rank / #true starts. ``classes`` defaults to every class
    seen in either input.
    """
    if not (math.isfinite(offset_s) and offset_s >= 0.0):
        raise MetricsInputError(f"offset_s must be a finite number >= 0, got {offset_s}")
    if classes is None:
        classes = sorted({p.action for p in predicted_starts} | {i.action for i in true_starts})
    return {
        c: _point_ap_one_class(
            [p for p in predicted_starts if p.action == c], [i for i in true_starts if i.action == c], offset_s
        )
        for c in classes
    }


def mirror_pair_accuracy(
    labels: Sequence[str],
    class_scores: ArrayLike,
    class_names: Sequence[str],
    mirror_pairs: Sequence[tuple[str, str]] = SYNTH_ACTIONS_MIRROR_PAIRS,
) -> float:
    """Share of steps labelled with one class of a pair whose true-class score beats its mirror's.

    Ties count as wrong. Pooled over all pairs; nan when no step is labelled
    with a paired class.
    """
    s = np.asarray(class_scores, dtype=float)
    if s.shape != (len(labels), len(class_names)):
        raise MetricsInputError(
            f"class_scores must have shape (steps, classes) = {(len(labels), len(class_names))}, got {s.shape}"
        )
    index = {name: i for i, name in enumerate(class_names)}
    mirror_of: dict[str, str] = {}
    for a, b in mirror_pairs:
        if a not in index or b not in index:
            raise MetricsInputError(f"mirror pair ({a}, {b}) not in classes {list(class_names)}")
        mirror_of[a], mirror_of[b] = b, a
    rows = [i for i, label in enumerate(labels) if label in mirror_of]
    if not rows:
        return math.nan
    correct = sum(s[i, index[labels[i]]] > s[i, index[mirror_of[labels[i]]]] for i in rows)
    return float(correct / len(rows))


def unannotated_streams(step_scores: Sequence[StepScores], instances: Sequence[ActionInstance]) -> list[str]:
    """Scored streams without a single annotation line (legal: a stream with no actions)."""
    annotated = {inst.video_id for inst in instances}
    return sorted({step.stream for step in step_scores} - annotated)


def _stream_arrays(
    step_scores: Sequence[StepScores], classes: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """stream -> (times sorted, scores of shape (steps, classes) in ``classes`` order)."""
    by_stream: dict[str, list[StepScores]] = {}
    for step in step_scores:
        by_stream.setdefault(step.stream, []).append(step)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for stream, steps in by_stream.items():
        steps = sorted(steps, key=lambda s: s.t)
        for step in steps:
            if missing := [c for c in classes if c not in step.scores]:
                raise EvaluationError(
                    f"scores of stream {stream!r} at t={step.t} lack class(es) {missing} needed for evaluation"
                )
        times = np.array([step.t for step in steps])
        if (dup := np.flatnonzero(np.diff(times) == 0)).size:
            raise EvaluationError(f"stream {stream!r} has more than one step at t={times[dup[0]]}")
        arrays[stream] = (times, np.array([[step.scores[c] for c in classes] for step in steps]))
    return arrays


def _mean_defined(values: Mapping[str, float]) -> float | None:
    defined = [v for v in values.values() if not math.isnan(v)]
    return float(np.mean(defined)) if defined else None


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def evaluate(
    step_scores: Sequence[StepScores],
    instances: Sequence[ActionInstance],
    classes: Sequence[str] = SYNTH_ACTIONS_CLASSES,
    mirror_pairs: Sequence[tuple[str, str]] = SYNTH_ACTIONS_MIRROR_PAIRS,
    *,
    background: str = BACKGROUND,
    allow_unannotated: bool = True,
) -> dict:
    """All scores of the spec, as a JSON-ready dict (undefined values are None).

    A scored stream with no annotation lines is a stream without actions and
    counts as all background, unless ``allow_unannotated`` is False. An
    annotated stream missing from the scores is an error (lost data). Classes
    in the scores that ``classes`` does not list are ignored.
    """
    if not step_scores:
        raise EvaluationError("no scored steps to evaluate")
    # A vocabulary without some pair (your own classes) simply has no mirror-pair figure for it.
    mirror_pairs = [(a, b) for a, b in mirror_pairs if a in classes and b in classes]
    if background not in classes:
        raise EvaluationError(f"background class {background!r} not in classes {list(classes)}")
    actions = [c for c in classes if c != background]
    if unknown := sorted({inst.action for inst in instances} - set(actions)):
        raise EvaluationError(f"annotations use class(es) {unknown} outside the action classes {actions}")

    arrays = _stream_arrays(step_scores, classes)
    annotated = group_by_video(instances)
    if lost := sorted(set(annotated) - set(arrays)):
        raise EvaluationError(f"annotated stream(s) missing from the scores: {', '.join(lost)}")
    if not allow_unannotated and (bare := unannotated_streams(step_scores, instances)):
        raise EvaluationError(f"scored stream(s) without annotations: {', '.join(bare)}")

    labels: list[str] = []
    predicted: list[PredictedStart] = []
    for stream, (times, scores) in arrays.items():
        labels.extend(label_at(annotated.get(stream, ()), float(t)) for t in times)
        predicted.extend(extract_starts(times, scores, classes, background, stream=stream))
    all_scores = np.concatenate([scores for _, scores in arrays.values()])
    label_array = np.array(labels)

    per_class_ap: dict[str, float] = {}
    per_class_cap: dict[str, float] = {}
    for c in actions:
        column, positives = all_scores[:, classes.index(c)], label_array == c
        per_class_ap[c] = average_precision(column, positives)
        per_class_cap[c] = calibrated_average_precision(column, positives)

    result: dict = {
        "mAP": _mean_defined(per_class_ap),
        "mcAP": _mean_defined(per_class_cap),
    }
    for offset in POINT_OFFSETS_S:
        result[f"p_mAP@{offset:g}s"] = _mean_defined(point_level_ap(predicted, instances, offset, actions))
    result["mirror_pair_accuracy"] = _nan_to_none(mirror_pair_accuracy(labels, all_scores, classes, mirror_pairs))
    result["per_class_AP"] = {c: _nan_to_none(v) for c, v in per_class_ap.items()}
    result["per_class_cAP"] = {c: _nan_to_none(v) for c, v in per_class_cap.items()}
    result["num_steps"] = len(labels)
    result["num_streams"] = len(arrays)
    return result
