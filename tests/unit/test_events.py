"""Action events from per-step scores: hysteresis, warm-up and stream ends, per stream and per class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.events import (
    ActionEvent,
    ActionEventDetector,
    EventConfigError,
    EventInputError,
    HysteresisConfig,
    TrackImportError,
)

CLASSES = ("background", "a", "b")
STEP = 0.25  # 4 Hz, exact in binary


def _config(**overrides) -> HysteresisConfig:
    params = dict(on_threshold=0.6, off_threshold=0.3, min_on_steps=3, min_off_steps=2, warmup_steps=0)
    params.update(overrides)
    return HysteresisConfig(**params)


def _run(detector: ActionEventDetector, stream: str, probs_a: list[float], start_step: int = 0) -> list[ActionEvent]:
    """Feed class ``a`` probabilities (b stays low); step k is at t = k * STEP, wall time 1000 + t."""
    events = []
    for k, p in enumerate(probs_a, start=start_step):
        t = k * STEP
        events += detector.update(stream, t, {"background": 1 - p, "a": p, "b": 0.0}, wall_time=1000.0 + t)
    return events


def test_a_start_needs_exactly_min_on_steps_above_the_on_threshold():
    detector = ActionEventDetector(CLASSES, _config())
    assert _run(detector, "cam", [0.1, 0.75, 0.875]) == []
    events = _run(detector, "cam", [1.0], start_step=3)
    # t is the first step of the run; confidence the mean over the run; wall_time the deciding step's.
    assert events == [ActionEvent("cam", "a", "start", 1 * STEP, (0.75 + 0.875 + 1.0) / 3, 1000.0 + 3 * STEP)]
    assert events[0].confidence == 0.875
    assert detector.active_actions("cam") == ("a",)


def test_a_spike_shorter_than_min_on_steps_starts_nothing():
    detector = ActionEventDetector(CLASSES, _config())
    assert _run(detector, "cam", [0.9, 0.9, 0.2, 0.9, 0.9, 0.1, 0.95, 0.95]) == []
    assert detector.active_actions("cam") == ()


def test_the_on_threshold_is_inclusive():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=1))
    events = _run(detector, "cam", [0.6])
    assert [(e.kind, e.t, e.confidence) for e in events] == [("start", 0.0, 0.6)]


def test_an_end_needs_min_off_steps_below_off_and_a_dip_between_thresholds_does_not_end_it():
    detector = ActionEventDetector(CLASSES, _config())
    probs = [1.0, 1.0, 1.0,  # start at step 0
             0.5, 0.4, 0.5,  # dip between off and on: still active
             0.25, 0.5,      # one step below off, then back: still active
             0.25, 0.125,    # two steps below off: ends at step 8
             0.0]
    events = _run(detector, "cam", probs)
    assert [(e.kind, e.action, e.t, e.wall_time) for e in events] == [
        ("start", "a", 0.0, 1000.0 + 2 * STEP),
        ("end", "a", 8 * STEP, 1000.0 + 9 * STEP),
    ]
    # End confidence: mean over the action's steps 0..7 (the closing run excluded).
    assert events[1].confidence == pytest.approx(sum(probs[:8]) / 8, abs=1e-12)
    assert events[1].reason == "threshold"
    assert detector.active_actions("cam") == ()


def test_an_action_can_start_again_after_it_ended():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=2, min_off_steps=1))
    events = _run(detector, "cam", [0.75, 0.75, 0.0, 0.75, 0.75])
    assert [(e.kind, e.t) for e in events] == [("start", 0.0), ("end", 2 * STEP), ("start", 3 * STEP)]


def test_onset_threshold_dates_a_start_back_to_where_its_score_began_to_climb():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=2, onset_threshold=0.2))
    # Climbs from step 1 (0.1 is below the onset level), confirmed at steps 4-5.
    events = _run(detector, "cam", [0.0, 0.25, 0.1, 0.25, 0.5, 0.75, 0.875])
    assert [(e.kind, e.t, e.wall_time) for e in events] == [("start", 3 * STEP, 1000.0 + 6 * STEP)]
    # The decision and its confidence are the confirming steps' alone.
    assert events[0].confidence == (0.75 + 0.875) / 2


def test_without_onset_threshold_or_with_it_at_on_a_start_is_the_first_confirming_step():
    scores = [0.0, 0.25, 0.5, 0.75, 0.875]
    plain = _run(ActionEventDetector(CLASSES, _config(min_on_steps=2)), "cam", scores)
    at_on = _run(ActionEventDetector(CLASSES, _config(min_on_steps=2, onset_threshold=0.6)), "cam", scores)
    assert [e.t for e in plain] == [e.t for e in at_on] == [3 * STEP]


def test_onset_does_not_reach_into_warmup_or_a_previous_action():
    detector = ActionEventDetector(CLASSES, _config(warmup_steps=2, min_on_steps=1, min_off_steps=1,
                                                    onset_threshold=0.2))
    # Above the onset level from step 0: the climb counts from the first step after warm-up.
    events = _run(detector, "cam", [0.5, 0.5, 0.5, 0.75, 0.25, 0.5, 0.75])
    # Step 4 (0.25: below off, above onset) ends the action; it does not also begin the next climb.
    assert [(e.kind, e.t) for e in events] == [("start", 2 * STEP), ("end", 4 * STEP), ("start", 5 * STEP)]


def test_warmup_after_reset_suppresses_starts_from_its_steps():
    detector = ActionEventDetector(CLASSES, _config(warmup_steps=4))
    assert detector.reset("cam", t=0.0, wall_time=1000.0) == []
    # High from the first step: the on-run may only begin at step 4, the first after warm-up.
    events = _run(detector, "cam", [1.0] * 7)
    assert [(e.kind, e.t, e.wall_time) for e in events] == [("start", 4 * STEP, 1000.0 + 6 * STEP)]


def test_an_unknown_stream_warms_up_as_if_reset():
    detector = ActionEventDetector(CLASSES, _config(warmup_steps=2, min_on_steps=1))
    events = _run(detector, "cam", [1.0, 1.0, 1.0])
    assert [(e.kind, e.t) for e in events] == [("start", 2 * STEP)]


def test_reset_ends_open_actions_and_warms_up_again():
    detector = ActionEventDetector(CLASSES, _config(warmup_steps=1, min_on_steps=1))
    assert [e.kind for e in _run(detector, "cam", [1.0, 0.75])] == ["start"]
    events = detector.reset("cam", t=5.0, wall_time=2000.0)
    assert events == [ActionEvent("cam", "a", "end", 5.0, 0.75, 2000.0, "reset")]
    assert _run(detector, "cam", [1.0], start_step=40) == []
    assert [e.kind for e in _run(detector, "cam", [1.0], start_step=41)] == ["start"]


def test_end_stream_closes_every_open_action_and_forgets_the_stream():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=1))
    detector.update("cam", 0.0, np.array([0.0, 0.75, 0.875]), wall_time=1.0)
    detector.update("cam", 0.25, np.array([0.0, 0.5, 1.0]), wall_time=1.25)
    events = detector.end_stream("cam", t=0.5, wall_time=1.5)
    assert events == [
        ActionEvent("cam", "a", "end", 0.5, 0.625, 1.5, "end_of_stream"),
        ActionEvent("cam", "b", "end", 0.5, 0.9375, 1.5, "end_of_stream"),
    ]
    assert detector.streams == ()
    assert detector.end_stream("cam", t=1.0, wall_time=2.0) == []


def test_several_classes_may_be_active_and_ends_come_before_starts():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=1, min_off_steps=1))
    first = detector.update("cam", 0.0, np.array([0.0, 1.0, 0.0]), wall_time=0.0)
    second = detector.update("cam", 0.25, np.array([0.0, 0.0, 1.0]), wall_time=0.25)
    assert [(e.kind, e.action) for e in first] == [("start", "a")]
    assert [(e.kind, e.action) for e in second] == [("end", "a"), ("start", "b")]
    both = detector.update("cam", 0.5, np.array([0.0, 0.75, 0.75]), wall_time=0.5)
    assert [(e.kind, e.action) for e in both] == [("start", "a")]
    assert detector.active_actions("cam") == ("a", "b")


def test_background_never_produces_events():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=1))
    events = []
    for k in range(5):
        events += detector.update("cam", k * STEP, np.array([1.0, 0.0, 0.0]), wall_time=k * STEP)
    assert events == []


def test_streams_are_independent():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=2, min_off_steps=1))
    events = []
    for k, (pa, pb) in enumerate([(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)]):
        t = k * STEP
        events += detector.update("x", t, {"background": 0.0, "a": pa, "b": 0.0}, wall_time=t)
        events += detector.update("y", t, {"background": 0.0, "a": pb, "b": 0.0}, wall_time=t)
    assert [(e.stream, e.kind, e.t) for e in events] == [
        ("y", "start", 1 * STEP),
        ("x", "start", 2 * STEP),
        ("y", "end", 3 * STEP),
    ]


def test_to_json_has_the_documented_keys():
    event = ActionEvent("cam", "a", "start", 1.25, 0.875, 1000.5)
    data = event.to_json()
    assert data == {
        "stream": "cam", "action": "a", "kind": "start", "t": 1.25, "confidence": 0.875,
        "wall_time": 1000.5, "reason": "threshold",
    }
    assert json.loads(json.dumps(data)) == data


def test_bad_scores_and_backwards_time_are_rejected():
    detector = ActionEventDetector(CLASSES, _config())
    with pytest.raises(EventInputError, match="lack"):
        detector.update("cam", 0.0, {"background": 1.0, "a": 0.0}, wall_time=0.0)
    with pytest.raises(EventInputError, match="shape"):
        detector.update("cam", 0.0, np.zeros(2), wall_time=0.0)
    with pytest.raises(EventInputError, match="finite"):
        detector.update("cam", 0.0, np.array([0.0, np.nan, 0.0]), wall_time=0.0)
    detector.update("cam", 1.0, np.zeros(3), wall_time=0.0)
    with pytest.raises(EventInputError, match="backwards"):
        detector.update("cam", 0.5, np.zeros(3), wall_time=0.0)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(off_threshold=0.6),           # off == on
        dict(off_threshold=0.7),           # off > on
        dict(off_threshold=0.0),
        dict(on_threshold=1.5),
        dict(on_threshold=float("nan")),
        dict(min_on_steps=0),
        dict(min_off_steps=0),
        dict(warmup_steps=-1),
        dict(min_on_steps=2.0),
        dict(onset_threshold=0.7),         # above on
        dict(onset_threshold=0.0),
        dict(onset_threshold=True),
    ],
)
def test_config_is_validated(overrides):
    with pytest.raises(EventConfigError):
        _config(**overrides)


def test_classes_are_validated():
    with pytest.raises(EventConfigError):
        ActionEventDetector(("background",), _config())
    with pytest.raises(EventConfigError):
        ActionEventDetector(("background", "a", "a"), _config())


# -- snapshots of a stream's track ------------------------------------------------------------

# Scores for a and b over 24 steps: warm-up, climbs, a start, dips between the thresholds, ends, a run cut short.
_SNAPSHOT_PROBS = [(0.9, 0.1), (0.35, 0.7), (0.5, 0.8), (0.7, 0.9), (0.8, 0.2), (0.9, 0.1), (0.4, 0.1), (0.2, 0.65),
                   (0.1, 0.7), (0.25, 0.9), (0.62, 0.95), (0.7, 0.5), (0.2, 0.2), (0.45, 0.1), (0.66, 0.31),
                   (0.9, 0.29), (0.1, 0.1), (0.5, 0.05), (0.7, 0.6), (0.8, 0.7), (0.75, 0.1), (0.2, 0.05),
                   (0.1, 0.6), (0.05, 0.7)]


def _feed(detector: ActionEventDetector, steps: range) -> list[list[ActionEvent]]:
    out = []
    for k in steps:
        pa, pb = _SNAPSHOT_PROBS[k]
        out.append(detector.update("cam", k * STEP, {"background": 0.0, "a": pa, "b": pb}, wall_time=k * STEP))
    return out


def test_a_track_exported_at_any_step_and_imported_elsewhere_continues_with_identical_events():
    config = _config(min_on_steps=2, min_off_steps=2, warmup_steps=2, onset_threshold=0.3)
    reference = ActionEventDetector(CLASSES, config)
    tracks = []
    events = []
    for k in range(len(_SNAPSHOT_PROBS)):
        events += _feed(reference, range(k, k + 1))
        # Through JSON text, strict (no NaN or infinity), as the snapshot file carries it.
        tracks.append(json.loads(json.dumps(reference.export_track("cam"), allow_nan=False)))
    assert sum(len(e) for e in events) >= 4
    for k in range(len(_SNAPSHOT_PROBS) - 1):
        other = ActionEventDetector(CLASSES, config)
        other.import_track("cam", tracks[k])
        assert other.export_track("cam") == tracks[k]
        assert _feed(other, range(k + 1, len(_SNAPSHOT_PROBS))) == events[k + 1:], f"split after step {k}"


def test_an_unseen_stream_exports_a_fresh_track_that_warms_up():
    detector = ActionEventDetector(CLASSES, _config(min_on_steps=1, warmup_steps=1))
    track = detector.export_track("new")
    assert track["last_t"] is None and track["steps_since_reset"] == 0 and set(track["classes"]) == {"a", "b"}
    assert detector.streams == ()  # exporting did not make the stream known
    detector.import_track("new", track)
    assert _run(detector, "new", [1.0]) == [] and len(_run(detector, "new", [1.0], start_step=1)) == 1


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda t: t.pop("last_t"), "must hold steps_since_reset, last_t and classes"),
        (lambda t: t["classes"].pop("b"), "is for classes ['a'], this detector's actions are ['a', 'b']"),
        (lambda t: t["classes"].update(c=t["classes"]["a"]), "is for classes ['a', 'b', 'c']"),
        (lambda t: t.update(steps_since_reset=-1), "steps_since_reset must be an integer >= 0, got -1"),
        (lambda t: t.update(last_t="soon"), "last_t must be a finite number, got 'soon'"),
        (lambda t: t["classes"]["a"].update(active=1), "active must be true or false, got 1"),
        (lambda t: t["classes"]["a"].update(run_sum=float("nan")), "run_sum must be a finite number"),
        (lambda t: t["classes"]["b"].update(segment_steps=2.5), "segment_steps must be an integer >= 0"),
        (lambda t: t["classes"]["b"].pop("onset_t"), "class 'b' must hold"),
    ],
)
def test_a_track_that_does_not_fit_is_refused_and_the_stream_keeps_what_it_had(change, fragment):
    detector = ActionEventDetector(CLASSES, _config())
    _run(detector, "cam", [0.9, 0.9])
    before = detector.export_track("cam")
    track = json.loads(json.dumps(before))
    change(track)
    with pytest.raises(TrackImportError, match="stream 'cam': its exported event track") as caught:
        detector.import_track("cam", track)
    assert fragment in str(caught.value)
    assert detector.export_track("cam") == before
