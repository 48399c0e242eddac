"""Event sinks: stdout, JSON-lines file and a real ZeroMQ PUB socket."""

import io
import json
import time

import zmq

from pipeline.events import ActionEvent
from pipeline.sinks import EventSinks


def test_events_reach_stdout_file_and_a_zeromq_subscriber(tmp_path):
    endpoint = f"ipc://{tmp_path}/events"
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"dock")  # topic = stream name: subscribe to one stream
    out = io.StringIO()
    sinks = EventSinks(stdout=out, jsonl_path=tmp_path / "events.jsonl", pub_endpoint=endpoint, context=context)
    sub.connect(endpoint)
    time.sleep(0.3)  # PUB/SUB: a subscription takes a moment to reach the publisher
    events = [
        ActionEvent("dock", "enter", "start", 12.75, 0.91, 1700000000.0),
        ActionEvent("yard", "exit", "start", 3.0, 0.8, 1700000001.0),
        ActionEvent("dock", "enter", "end", 14.0, 0.88, 1700000002.0),
    ]
    try:
        for e in events:
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
        assert {"stream", "action", "kind", "t", "confidence", "wall_time"} <= set(record)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(r["stream"], r["kind"]) for r in lines] == [("dock", "start"), ("yard", "start"), ("dock", "end")]
    assert "dock" in out.getvalue() and "enter" in out.getvalue() and "t=  12.75s" in out.getvalue()
