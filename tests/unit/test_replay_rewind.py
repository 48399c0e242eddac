"""The replay rewind's decisions: which steps and events a rewind outputs again and how its events are
named (``rewind.py``), what a dead worker wrote after its snapshot (the output files' tails), which
streams the supervisor rewinds (``registry.py``), and a capture outbox let go of when its runner is
replaced."""

from __future__ import annotations

import json
import threading

import numpy as np

from pipeline.config import SourceConfig
from pipeline.events import ActionEvent
from pipeline.stages.capture.outbox import OutFrame, StreamCounters, StreamOutbox
from pipeline.stages.temporal import rewind as rewind_module
from pipeline.stages.temporal.rewind import Rewind, Written, written_after
from pipeline.supervision.registry import StreamTable
from pipeline.transport.control import StreamRestored, decode, encode


def _event(action="enter", kind="start", t=2.0) -> ActionEvent:
    return ActionEvent("cam", action, kind, t, 0.9, 0.0)


def test_a_rewind_waits_for_its_generation_then_outputs_only_what_was_not_written():
    rewind = Rewind("cam", generation=2, seq=10, t=2.5, written=Written(3.25, frozenset({("enter", "start", 2.0)})))
    assert rewind.waiting(2) and not rewind.waiting(3)
    assert not rewind.begins(3, start=True, reason="restart")  # a capture restart is not the rewind
    assert not rewind.begins(3, start=False, reason="")
    assert rewind.begins(3, start=True, reason="rewind") and not rewind.waiting(2)
    assert rewind.quiet(3, 3.0) and rewind.quiet(3, 3.25) and not rewind.quiet(3, 3.5)
    assert not rewind.quiet(4, 3.0)  # a later generation is not the rewind
    fresh = rewind.fresh(3, [_event(), _event(kind="end", t=3.5), _event("exit")])
    assert [(e.action, e.kind) for e in fresh] == [("enter", "end"), ("exit", "start")]
    # The rewind's message n is the replaced generation's seq + 1 + n: a re-decided event keeps its id.
    assert rewind.numbered(3, 0) == (2, 11) and rewind.numbered(3, 4) == (2, 15) and rewind.numbered(4, 4) == (4, 4)


def test_without_a_scores_file_nothing_is_quiet():
    rewind = Rewind("cam", 0, 3, 1.0)
    rewind.begins(1, True, "rewind")
    assert not rewind.quiet(1, 1.25)


def test_written_after_reads_the_last_step_and_the_events_decided_after_each_snapshot(tmp_path, monkeypatch):
    scores, events = tmp_path / "s.jsonl", tmp_path / "e.jsonl"
    lines = [{"stream": s, "t": t, "scores": {"a": 0.5}} for t in (1.0, 1.25, 1.5) for s in ("cam", "other")]
    scores.write_text("".join(json.dumps(x) + "\n" for x in lines[:-1]) + '{"stream": "cam", "t": 9')  # not ended
    events.write_text("".join(json.dumps({"stream": "cam", "action": a, "kind": "start", "t": t, "wall_time": w}) + "\n"
                              for a, t, w in (("enter", 0.5, 99.0), ("exit", 1.25, 101.0))))
    got = written_after(scores, events, {"cam": 100.0, "gone": 100.0})
    assert got["cam"] == Written(1.5, frozenset({("exit", "start", 1.25)}))
    assert got["gone"] == Written(None, frozenset())
    assert written_after(tmp_path / "missing", None, {"cam": 0.0})["cam"] == Written()
    monkeypatch.setattr(rewind_module, "TAIL_BYTES", 90)  # the tail's first line is cut: it is not read
    tail = written_after(scores, None, {"cam": 0.0, "other": 0.0})
    assert tail["cam"].last_step_t == 1.5 and tail["other"].last_step_t is None


def test_the_supervisor_rewinds_running_replays_of_the_generation_restored_only():
    table = StreamTable(capacity=8)
    clip = table.add("clip", SourceConfig(uri="a.mp4"), live=False, workers=["capture:0"])
    table.add("cam", SourceConfig(uri="rtsp://h/x"), live=True, workers=["capture:0"])
    clip.delivered = True
    assert table.rewound(loop=False) == ("clip",) and table.rewound(loop=True) == ()
    assert table.rewind("cam", 0, 1.0) is None  # live: continued, not read again
    assert table.rewind("clip", 1, 1.0) is None  # restored from another generation than the current one
    entry = table.rewind("clip", 0, 2.5)
    assert (entry.generation, entry.start_reason, entry.resume_after_t, entry.delivered) == (1, "rewind", 2.5, False)
    assert table.rewind("clip", 0, 2.5) is None  # asked twice: once
    table.record("clip", 1, "ended", "end_of_stream")
    assert table.rewind("clip", 1, 3.0) is None and table.rewound(loop=False) == ()


def test_stream_restored_travels_on_the_control_channel():
    message = StreamRestored("clip", 2, 7.25)
    assert decode(encode(message)) == message


def test_a_discarded_outbox_lets_go_of_its_frames_uncounted_and_takes_no_more():
    counters = StreamCounters("clip", None)
    outbox = StreamOutbox("clip", 0, live=False, capacity=2, stale_after_s=5.0, counters=counters,
                          wake=threading.Event())
    frame = OutFrame(1, "open", 0.0, 0.0, np.zeros((2, 2, 3), np.uint8))
    assert outbox.put_frame(frame, threading.Event())
    outbox.discard()
    assert outbox.finished and outbox.empty and counters.captured == 0
    assert not outbox.put_frame(frame, threading.Event())
