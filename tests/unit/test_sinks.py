"""Event and score sinks: stdout, JSON-lines files, a real ZeroMQ PUB socket, and
failure isolation against a real full disk (/dev/full)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import zmq

from pipeline.events import ActionEvent
from pipeline.outputs.files import LineAppender, OutputError, prepare_output
from pipeline.outputs.sinks import JsonlEventSink, PubEventSink, SinkFanOut, StdoutEventSink

EVENTS = [
    ActionEvent("dock", "enter", "start", 12.75, 0.91, 1700000000.0),
    ActionEvent("yard", "exit", "start", 3.0, 0.8, 1700000001.0),
    ActionEvent("dock", "enter", "end", 14.0, 0.88, 1700000002.0, "reconnect"),
]


def test_events_reach_stdout_file_and_a_zeromq_subscriber(tmp_path):
    endpoint = f"ipc://{tmp_path}/events"
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"dock")  # topic = stream name: subscribe to one stream
    out = io.StringIO()
    sinks = SinkFanOut([StdoutEventSink(out), JsonlEventSink(tmp_path / "events.jsonl"), PubEventSink(endpoint, context)])
    sub.connect(endpoint)
    time.sleep(0.3)  # PUB/SUB: a subscription takes a moment to reach the publisher
    try:
        for e in EVENTS:
            sinks.emit(e)
        received = []
        while sub.poll(1000) and len(received) < 2:
            topic, payload = sub.recv_multipart()
            received.append((topic, json.loads(payload)))
    finally:
        sinks.close()
        sub.close()
        context.term()
    assert [t for t, _ in received] == [b"dock", b"dock"]
    assert [r["kind"] for _, r in received] == ["start", "end"]
    for _, record in received:
        assert {"stream", "action", "kind", "t", "confidence", "wall_time", "reason"} <= set(record)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(r["stream"], r["kind"], r["reason"]) for r in lines] == [
        ("dock", "start", "threshold"), ("yard", "start", "threshold"), ("dock", "end", "reconnect")]
    assert "dock" in out.getvalue() and "t=  12.75s" in out.getvalue() and "(reconnect)" in out.getvalue()


class _Metrics:
    class _Counter:
        def __init__(self) -> None:
            self.counts: dict = {}

        def labels(self, *labels):
            counter = self

            class _Child:
                def inc(self, n=1):
                    counter.counts[labels] = counter.counts.get(labels, 0) + n

            return _Child()

    def __init__(self) -> None:
        self.sink_errors = self._Counter()


def test_a_full_disk_costs_only_that_sink_its_records_and_they_are_counted(tmp_path, caplog):
    metrics = _Metrics()
    good = tmp_path / "good.jsonl"
    full = JsonlEventSink(Path("/dev/full"))
    full.name = "events_full"
    sinks = SinkFanOut([full, JsonlEventSink(good)], metrics)
    for e in EVENTS:
        sinks.emit(e)  # never raises
    sinks.close()
    assert len(good.read_text().splitlines()) == 3
    assert metrics.sink_errors.counts == {("events_full",): 3}
    # One line when the sink starts failing, not one per record.
    assert [r.message for r in caplog.records if "failed" in r.message and "events_full" in r.message] == [
        "output events_full failed: [Errno 28] No space left on device; scoring goes on, its records are counted "
        "as lost until it recovers"
    ]


def test_an_appender_never_leaves_half_a_line(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"complete": 1}\n{"killed mid-wr')  # a predecessor killed mid-write
    appender = LineAppender(path)
    appender.write_line('{"next": 2}')
    appender.close()
    assert path.read_text().splitlines() == ['{"complete": 1}', '{"next": 2}']


def test_outputs_are_rotated_never_overwritten_and_bad_paths_name_the_setting(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("run 1\n")
    prepare_output(path, "outputs.events_jsonl")
    path.write_text("run 2\n")
    prepared = prepare_output(path, "outputs.events_jsonl", keep=2)
    assert prepared.rotated_to == tmp_path / "events.jsonl.1"
    assert (tmp_path / "events.jsonl.1").read_text() == "run 2\n" and (tmp_path / "events.jsonl.2").read_text() == "run 1\n"
    assert path.read_text() == ""
    path.write_text("run 3\n")
    prepare_output(path, "outputs.events_jsonl", existing="append")
    assert path.read_text() == "run 3\n"
    with pytest.raises(OutputError, match=r"outputs.scores_jsonl: folder .*nope does not exist"):
        prepare_output(tmp_path / "nope" / "s.jsonl", "outputs.scores_jsonl")
    with pytest.raises(OutputError, match="outputs.scores_jsonl: .* is a folder"):
        prepare_output(tmp_path, "outputs.scores_jsonl")
    # Unwritable even for root (the tests run as root in CI): sysfs refuses new files.
    with pytest.raises(OutputError, match="outputs.scores_jsonl: /sys/scores.jsonl cannot be written: Permission denied"):
        prepare_output(Path("/sys/scores.jsonl"), "outputs.scores_jsonl")
    # A device is written in place, never rotated.
    assert prepare_output(Path("/dev/full"), "outputs.events_jsonl").rotated_to is None
