"""Event detector settings chosen on validation streams, frozen in the checkpoint, used by the pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engines.head_config import EVENTS_METADATA_KEY, read_head_events
from engines.temporal_head import load_head, save_head
from pipeline.config import EventsConfig, events_for_model
from pipeline.errors import ConfigError
from pipeline.supervision.preflight import preflight
from tests.support.runs import MODEL, config
from tools.evaluation.annotations import ActionInstance
from tools.training.events_tuning import ScoredStream, start_events, tune

CLASSES = ("background", "enter", "exit")


def test_the_models_settings_apply_and_explicit_config_keys_win():
    model = {"on_threshold": 0.7, "off_threshold": 0.4, "min_on_steps": 1, "min_off_steps": 3, "warmup_steps": 2}
    assert events_for_model(EventsConfig(), None) == EventsConfig()
    assert events_for_model(EventsConfig(), model) == EventsConfig(**model)
    mine = EventsConfig(min_on_steps=3)
    assert events_for_model(mine, model) == EventsConfig(**{**model, "min_on_steps": 3})
    with pytest.raises(ConfigError, match="do not fit the model's own.*set all of them, or none"):
        events_for_model(EventsConfig(on_threshold=0.35), model)  # below the model's off_threshold


def _stream(name: str, starts: list[int], length: int = 80, noise: float = 0.0, seed: int = 0) -> ScoredStream:
    """'enter' for 6 steps from each start, with an optional one-step blip of 'exit' at 0.45."""
    rng = np.random.default_rng(seed)
    probs = np.zeros((length, 3))
    probs[:, 0] = 1.0
    for s in starts:
        probs[s:s + 6] = (0.1, 0.9, 0.0)
    if noise:
        for i in rng.choice(length, size=6, replace=False):
            if probs[i, 0] == 1.0:
                probs[i] = (0.55 - noise, 0.0, 0.45 + noise)  # a single-step false 'exit'
    return ScoredStream(name, np.arange(length) * 0.25, probs)


def test_tuning_finds_settings_that_keep_true_starts_and_drop_single_step_blips():
    streams = [_stream("a", [10, 40], noise=0.1, seed=1), _stream("b", [20, 60], noise=0.1, seed=2)]
    truth = [ActionInstance(s.stream, "enter", float(s.times[i]), float(s.times[i + 6]))
             for s, starts in zip(streams, ([10, 40], [20, 60])) for i in starts]
    settings, figures = tune(streams, CLASSES, truth)
    assert figures["precision"] == 1.0 and figures["recall"] == 1.0
    # The default settings would have reported the blips too (they pass on_threshold 0.5 for one step
    # only when min_on_steps is 1); the tuned ones must not.
    assert settings["min_on_steps"] >= 2 or settings["on_threshold"] > 0.55
    assert len(start_events(streams, CLASSES, settings)) == 4


def test_tuning_dates_starts_back_to_a_slow_climb_when_that_is_where_actions_begin():
    # 'enter' climbs for 6 steps (1.5 s) below every on-threshold before it is clear: dated at the
    # crossing, each start is more than 1 s late; dated back to the climb, each is on time.
    climb = (0.12, 0.2, 0.25, 0.3, 0.32, 0.35)
    streams = []
    for name, starts in (("a", [10, 40]), ("b", [20, 60])):
        probs = np.zeros((80, 3))
        probs[:, 0] = 1.0
        for s in starts:
            for k, p in enumerate(climb + (0.9,) * 6):
                probs[s + k] = (1 - p, p, 0.0)
        streams.append(ScoredStream(name, np.arange(80) * 0.25, probs))
    truth = [ActionInstance(s.stream, "enter", float(s.times[i]), float(s.times[i + 12]))
             for s, starts in zip(streams, ([10, 40], [20, 60])) for i in starts]
    late = {"on_threshold": 0.5, "off_threshold": 0.3, "min_on_steps": 2, "min_off_steps": 1, "warmup_steps": 2}
    assert [e.t for e in start_events(streams, CLASSES, late)] == [4.0, 11.5, 6.5, 16.5]
    settings, figures = tune(streams, CLASSES, truth)
    assert figures["precision"] == 1.0 and figures["recall"] == 1.0
    assert settings["onset_threshold"] <= 0.2
    assert sorted(e.t for e in start_events(streams, CLASSES, settings)) == [2.5, 5.0, 10.0, 15.0]


def test_train_head_freezes_settings_and_the_pipeline_runs_with_them(tmp_path):
    head, metadata = load_head(MODEL)
    chosen = {"on_threshold": 0.65, "off_threshold": 0.2, "min_on_steps": 3, "min_off_steps": 1, "warmup_steps": 2}
    tuned = tmp_path / "tuned.safetensors"
    save_head(tuned, head, {**{k: v for k, v in metadata.items() if k not in ("format", "head")},
                            EVENTS_METADATA_KEY: json.dumps(chosen)})
    assert read_head_events(tuned) == chosen
    assert preflight(config(sources=[{"uri": "a.mp4"}], model=str(tuned))).events == EventsConfig(**chosen)
    override = preflight(config(sources=[{"uri": "a.mp4"}], model=str(tuned), events={"min_on_steps": 1}))
    assert override.events == EventsConfig(**{**chosen, "min_on_steps": 1})
    plain = tmp_path / "plain.safetensors"
    shutil.copy(MODEL, plain)
    if read_head_events(plain) is None:  # a head trained before settings were frozen: the config's defaults
        assert preflight(config(sources=[{"uri": "a.mp4"}], model=str(plain))).events == EventsConfig()
