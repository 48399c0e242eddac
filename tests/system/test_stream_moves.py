"""A stream moved between two pipelines at a step boundary, without Ray: what a cluster's drain does on
each node. Two real supervisors share a snapshot folder; the first ends a real-time replay with reason
``moved`` (its state snapshotted at that END, its actions left open), the second continues it from the
snapshot. Together their scores files hold every step of the offline scorer once, with its scores, and
their events files its events once (an action open at the move is started by the first and ended by
the second)."""

from __future__ import annotations

import json
import threading

from engines.head_config import read_head_events
from pipeline.config import SourceConfig, events_for_model
from pipeline.scores import read_scores
from pipeline.supervision.registry import ResumeRequest
from pipeline.supervision.supervisor import Supervisor
from tests.support.runs import config, stream_row, synth_videos
from tests.support.waiting import wait_for
from tests.system.test_replay_rewind import SCORE_ATOL, _offline, _offline_events


def _node(tmp_path, name: str, state_dir):
    out = tmp_path / name
    out.mkdir()
    cfg = config(replay={"realtime": True}, control={"port": 0, "keep_running": True},
                 outputs={"scores_jsonl": str(out / "scores.jsonl"), "events_jsonl": str(out / "events.jsonl")},
                 state={"dir": str(state_dir), "shared": True})
    supervisor = Supervisor(cfg)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    return supervisor, thread, out


def test_a_replay_moved_between_two_pipelines_gives_the_offline_scores_and_events_once(tmp_path):
    video = synth_videos(tmp_path / "synth", count=1, seed=4242, duration_range=(20.0, 22.0))[0]
    offline = _offline(video, tmp_path)
    state_dir = tmp_path / "state"
    first, first_thread, first_out = _node(tmp_path, "a", state_dir)
    second, second_thread, second_out = _node(tmp_path, "b", state_dir)
    try:
        wait_for(lambda: first.view.readiness()[0] and second.view.readiness()[0], 120, "both pipelines up")
        source = SourceConfig(uri=str(video), name="clip")
        first.view.add_stream(source)
        wait_for(lambda: stream_row(first, "clip").get("processed", 0) >= len(offline) // 3, 60, "a third of the steps")
        first.view.move_out("clip")
        moved = wait_for(lambda: stream_row(first, "clip").get("moved"), 30, "the move's snapshot")
        assert moved["snapshot"] is True and moved["t"] > 0, moved
        row = stream_row(first, "clip")
        assert row["state"] == "ended" and row["reason"] == "moved", row

        second.view.resume_stream(source, ResumeRequest("move"))
        done = wait_for(lambda: (r := stream_row(second, "clip")).get("state") == "ended" and r, 90, "the replay's end")
        assert done["reason"] == "end_of_stream", done
        assert done["restored"] == {"move": 1} and done["state_origin"] == "moved from another node", done
    finally:
        first.request_stop()
        second.request_stop()
        first_thread.join(60)
        second_thread.join(60)

    before, after = read_scores(first_out / "scores.jsonl"), read_scores(second_out / "scores.jsonl")
    assert before and after, "the move happened mid-replay: each pipeline scored some of it"
    assert before[-1].t == moved["t"], "the snapshot is of the last step scored before the move"
    streamed = before + after
    assert [s.t for s in streamed] == [s.t for s in offline], "a step lost, repeated or reordered across the move"
    worst = max(abs(a.scores[c] - b.scores[c]) for a, b in zip(streamed, offline) for c in a.scores)
    assert worst < SCORE_ATOL, f"scores across the move differ from offline by {worst}"

    hysteresis = events_for_model(first.config.events, read_head_events(first.config.model)).hysteresis()
    expected = _offline_events(offline, hysteresis, tuple(offline[0].scores))
    got = [json.loads(line) for out in (first_out, second_out) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["action"], e["kind"], round(e["t"], 4), e["reason"]) for e in got] == [x[:4] for x in expected], got
    assert not any(e["reason"] == "moved" for e in got), "a move ends no action"
