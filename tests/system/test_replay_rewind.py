"""The replay rewind in a real run: the temporal worker SIGKILLed three times at random points of a
real-time replay; each successor restores the stream from its snapshot and its capture reads the file
again from there, so the scores file holds every step of the offline scorer once, with its scores,
and the events file every offline event once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

from engines.head_config import read_head_events
from pipeline.config import events_for_model
from pipeline.events import ActionEventDetector
from pipeline.scores import read_scores
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.live import accounted
from tests.support.runs import MODEL, config, run_until, stream_row, synth_videos

SCORE_ATOL = 1e-5  # as the streaming-equals-offline test


def _offline(video, tmp_path) -> list:
    out = tmp_path / "offline.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tools.score_offline", "--model", str(MODEL), "--videos", str(video),
                           "--out", str(out), "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_scores(out)


def _offline_events(steps, hysteresis, classes) -> list[tuple]:
    """The events the detector decides over the offline steps as one sequence (START, steps, END)."""
    detector = ActionEventDetector(classes, hysteresis)
    stream = steps[0].stream
    events = detector.reset(stream, steps[0].t, 0.0, "open")
    for step in steps:
        events += detector.update(stream, step.t, [step.scores[c] for c in classes], 0.0)
    events += detector.end_stream(stream, steps[-1].t, 0.0, "end_of_stream")
    return [(e.action, e.kind, round(e.t, 4), e.reason, e.confidence) for e in events]


def test_a_replay_gives_the_offline_scores_and_events_once_across_three_temporal_crashes(tmp_path):
    video = synth_videos(tmp_path / "synth", count=1, seed=7373, duration_range=(22.0, 24.0))[0]
    offline = _offline(video, tmp_path)
    scores_out, events_out = tmp_path / "s.jsonl", tmp_path / "e.jsonl"
    cfg = config(sources=[{"uri": str(video), "name": "clip"}], replay={"realtime": True},
                 outputs={"scores_jsonl": str(scores_out), "events_jsonl": str(events_out)},
                 temporal={"replay_reorder_timeout_s": 60.0},
                 state={"max_age_s": 120.0})  # a restarted temporal worker takes seconds on a busy machine
    rng = random.Random(1919)
    steps = len(offline)
    # Three random points, apart enough that each successor has rewound and stepped before the next kill,
    # and before the last few steps (whose END could beat the rewind to the temporal worker).
    targets = sorted(rng.sample(range(8, steps - 24, 14), 3))
    killed: list[int] = []

    def kill_at_targets(sup: Supervisor) -> None:
        if len(killed) == len(targets):
            return
        stages = {s["name"]: s for s in sup.view.stages()}
        processed = stream_row(sup, "clip").get("processed", 0)
        since = processed - (killed[-1] if killed else 0)
        if processed >= targets[len(killed)] and since >= 8 and all(s["ready"] for s in stages.values()):
            os.kill(stages["temporal"]["pid"], signal.SIGKILL)
            killed.append(processed)

    summary = run_until(Supervisor(cfg), lambda sup: False, during=kill_at_targets, timeout_s=240)
    assert len(killed) == 3 and summary.restarts == {"temporal": 3}, (killed, targets, summary.restarts)
    row = summary.streams["clip"]
    assert row["state"] == "ended" and row["reason"] == "end_of_stream", row
    assert row["restored"] == {"crash": 3} and row["restore_refused"] == {}, row
    assert row["sequences"] == {"open": 1}, row  # continued through every crash: no new sequence
    assert accounted(row), row  # the frames read again are captured, sent and processed again
    streamed = read_scores(scores_out)
    assert [s.t for s in streamed] == [s.t for s in offline], "a step lost, repeated or reordered"
    worst = max(abs(a.scores[c] - b.scores[c]) for a, b in zip(streamed, offline) for c in a.scores)
    assert worst < SCORE_ATOL, f"streamed scores differ from offline by {worst}"

    hysteresis = events_for_model(cfg.events, read_head_events(cfg.model)).hysteresis()
    expected = _offline_events(offline, hysteresis, tuple(offline[0].scores))
    got = [json.loads(line) for line in events_out.read_text().splitlines()]
    assert [(e["action"], e["kind"], round(e["t"], 4), e["reason"]) for e in got] == [x[:4] for x in expected], got
    assert all(abs(e["confidence"] - x[4]) < 1e-4 for e, x in zip(got, expected))
    assert len({e["id"] for e in got}) == len(got)
    assert summary.exit_code == 0
