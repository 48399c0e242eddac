"""Events leave the pipeline over the network: a real pipeline run posting to a real HTTP receiver
on loopback that refuses its first requests; every event arrives once, in order, and scoring never waits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.supervision.supervisor import Supervisor
from tests.support.runs import config, run_until, synth_videos
from tests.support.waiting import wait_until
from tests.support.web import HANG, Receiver


@pytest.fixture(scope="module")
def synth_streams(tmp_path_factory) -> list[Path]:
    return synth_videos(tmp_path_factory.mktemp("net_outputs"), count=2, seed=4242, duration_range=(12.0, 14.0))


def _replay_to_webhook(videos: list[Path], tmp_path: Path, webhook: dict) -> tuple:
    """The videos replayed as fast as they decode, events to a file and to ``webhook`` (retries 0.2 s
    apart at most); the summary, and the events the file got, which the test needs some of."""
    events_file = tmp_path / "events.jsonl"
    cfg = config(sources=[{"uri": str(v), "name": v.stem} for v in videos], replay={"realtime": False},
                 outputs={"events_jsonl": str(events_file), "webhook": {"retry_max_s": 0.2, **webhook}})
    summary = run_until(Supervisor(cfg), lambda s: False, timeout_s=120)
    written = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert written, "the replay should produce events for this test to mean anything"
    return summary, written


def test_webhook_gets_every_event_the_jsonl_file_gets_despite_a_failing_start(synth_streams, tmp_path):
    receiver = Receiver(statuses=[503, 503, 502])
    try:
        summary, written = _replay_to_webhook(synth_streams, tmp_path, {"url": receiver.url, "flush_timeout_s": 10.0})
        assert receiver.accepted == written  # the same events, each once, in the same order
        assert receiver.requests == len(written) + 3
        assert sum(row["events"] for row in summary.streams.values()) == len(written)
    finally:
        receiver.stop()


def test_webhook_that_hangs_then_fails_then_recovers_gets_each_event_once_by_id_in_order(synth_streams, tmp_path):
    """A receiver that holds two requests past the sender's timeout (it got them; the sender cannot
    know) and then fails twice: the sender resends the same event with the same id, one request at a
    time, and the receiver, keeping the first copy of each id, holds exactly the events file, in order."""
    receiver = Receiver(statuses=[HANG, HANG, 500, 503], hang_s=2.5)
    try:
        summary, written = _replay_to_webhook(synth_streams, tmp_path,
                                              {"url": receiver.url, "timeout_s": 1.0, "flush_timeout_s": 30.0})
        ids = [event["id"] for event in written]
        assert all(ids) and len(set(ids)) == len(ids)  # every event has an id of its own
        assert receiver.kept_ids == ids  # exactly once by id, in order
        assert receiver.requests == len(written) + 4  # the first event four more times, nothing else repeated
        assert [h.get("Idempotency-Key") for h in receiver.headers] == [ids[0]] * 4 + ids
        assert receiver.accepted == written  # what was answered 200 in time: each once, in order
        assert sum(row["events"] for row in summary.streams.values()) == len(written)
    finally:
        receiver.stop()


# -- MQTT ------------------------------------------------------------------------------------------
def _event(i: int, stream: str = "cam1", action: str = "enter", kind: str = "start"):
    from pipeline.events import ActionEvent

    return ActionEvent(stream, action, kind, float(i), 0.8, 1000.0 + i, "threshold")


def test_topic_layout_follows_each_stream_and_action():
    from pipeline.outputs.mqtt import TopicLayout

    layout = TopicLayout("home/actions")
    first = layout.messages(_event(1, action="enter"))
    assert [(m.topic, m.retain) for m in first] == [
        ("home/actions/events", False), ("home/actions/cam1/events", False),
        ("home/actions/cam1/enter", True), ("home/actions/cam1/state", True)]
    assert first[2].payload == "ON"
    layout.messages(_event(2, action="wave"))
    last = layout.messages(_event(3, action="enter", kind="end"))
    assert last[2].payload == "OFF"
    assert json.loads(last[3].payload)["active"] == ["wave"]
    assert json.loads(layout.messages(_event(4, stream="cam2"))[3].payload)["active"] == ["enter"]  # per stream
    for bad in ("", "a/#", "+", "/a", "a/"):
        with pytest.raises(ValueError, match="MQTT topic prefix"):
            TopicLayout(bad)


@pytest.fixture
def broker(tmp_path):
    from tests.support.mqtt import MosquittoBroker

    b = MosquittoBroker(tmp_path / "mosquitto")
    yield b
    b.stop()


def test_mqtt_buffers_while_the_broker_restarts_and_delivers_each_event_once_in_order(broker):
    from pipeline.backoff import Backoff
    from pipeline.outputs.delivery import BackgroundSink
    from pipeline.outputs.mqtt import MqttTransport
    from tests.support.mqtt import MqttRecorder

    recorder = MqttRecorder(broker.port, "actionpipe/#")
    sink = BackgroundSink(MqttTransport("127.0.0.1", broker.port), capacity=100,
                          backoff=Backoff(initial_s=0.05, max_s=0.3, jitter=0.0))
    try:
        for i in range(3):
            sink.emit(_event(i, kind="start" if i % 2 == 0 else "end"))
        wait_until(lambda: len(recorder.payloads("actionpipe/events")) == 3, 20)
        broker.stop()
        for i in range(3, 8):  # while the broker is down: buffered, not lost
            sink.emit(_event(i, kind="start" if i % 2 == 0 else "end"))
        wait_until(lambda: sink.pending == 5, 5)
        broker.start()
        wait_until(lambda: len(recorder.payloads("actionpipe/events")) == 8, 20)
        wait_until(lambda: sink.pending == 0, 20)
    finally:
        sink.close()
    sent = [json.loads(p)["t"] for p in recorder.payloads("actionpipe/events")]
    assert sent == [float(i) for i in range(8)]  # once each, in order
    assert [json.loads(p)["t"] for p in recorder.payloads("actionpipe/cam1/events")] == sent
    assert sink.dropped == {}
    # A subscriber arriving now finds the retained state: the last event (t=7) ended "enter".
    late = MqttRecorder(broker.port, "actionpipe/cam1/#", client_id="late", clean=True)
    try:
        wait_until(lambda: "actionpipe/cam1/state" in {t for t, _, _ in late.messages}, 20)
        retained = {t: p for t, p, r in late.messages if r}
        assert retained["actionpipe/cam1/enter"] == "OFF"
        assert json.loads(retained["actionpipe/cam1/state"])["last_event"]["t"] == 7.0
    finally:
        late.close()
    assert recorder.payloads("actionpipe/available")[-1] == "offline"  # said so on a clean close
    recorder.close()


def test_pipeline_events_reach_mqtt_across_a_broker_restart_mid_run(synth_streams, broker, tmp_path):
    import time

    from tests.support.mqtt import MqttRecorder

    recorder = MqttRecorder(broker.port, "actionpipe/#")
    events_file = tmp_path / "events.jsonl"
    cfg = config(
        sources=[{"uri": str(v), "name": v.stem} for v in synth_streams],
        outputs={"events_jsonl": str(events_file),
                 "mqtt": {"port": broker.port, "retry_max_s": 0.5, "flush_timeout_s": 20.0}},
    )
    restarted: list[int] = []  # how many events the file held when the broker was back

    def restart_broker(supervisor) -> None:
        # Once the first events went out, take the broker away for two seconds, mid-run.
        if not restarted and recorder.payloads("actionpipe/events"):
            broker.stop()
            time.sleep(2.0)
            broker.start()
            restarted.append(_whole_lines(events_file))

    # Stopped once two events were made after the restart (or else it ends with its replays).
    summary = run_until(Supervisor(cfg), lambda s: bool(restarted) and _whole_lines(events_file) >= restarted[0] + 2,
                        timeout_s=120, during=restart_broker)
    assert restarted, "the broker should have been restarted during the run"
    written = [json.loads(line) for line in events_file.read_text().splitlines()]
    wait_until(lambda: len(recorder.payloads("actionpipe/events")) >= len(written), 20)
    received = [json.loads(p) for p in recorder.payloads("actionpipe/events")]
    recorder.close()
    assert received == written
    assert sum(row["events"] for row in summary.streams.values()) == len(written)


def test_mqtt_reconnect_wakes_a_sender_whose_next_retry_is_a_minute_away(broker):
    from pipeline.backoff import Backoff
    from pipeline.outputs.delivery import BackgroundSink
    from pipeline.outputs.mqtt import MqttTransport
    from tests.support.mqtt import MqttRecorder

    recorder = MqttRecorder(broker.port, "actionpipe/#")
    sink = BackgroundSink(MqttTransport("127.0.0.1", broker.port), capacity=10,
                          backoff=Backoff(initial_s=60.0, max_s=60.0, jitter=0.0), flush_timeout_s=0.0)
    try:
        sink.emit(_event(0))
        wait_until(lambda: len(recorder.payloads("actionpipe/events")) == 1, 20)
        broker.stop()
        sink.emit(_event(1))  # fails at once (no broker): the next try is a minute away
        wait_until(lambda: sink.pending == 1, 5)
        time.sleep(1.0)
        broker.start()
        wait_until(lambda: len(recorder.payloads("actionpipe/events")) == 2, 25)  # paho reconnects within ~10 s
    finally:
        sink.close()
        recorder.close()
    assert sink.dropped == {}


def test_mqtt_events_survive_a_30_s_and_a_second_broker_outage_and_the_reconnect_wakes_the_sender(synth_streams,
                                                                                                   broker, tmp_path):
    """Mosquitto stopped for 30 s, and then again until the replays have made an event while it is down,
    while looped replays keep making events: what was made during an outage reaches the broker soon after
    it is back, although the longest wait between retries is two minutes, and at the stop every event is
    there once, in order, by id. (Whether a given run's retry timer had grown past the catch-up bound
    depends on when its events fell in the outage: the wake-up itself is pinned down by the test before
    this one. The second outage needs no 30 s of its own: it is there to see a sender that came back once
    survive a second loss of the broker with events made meanwhile.)"""
    import time

    from tests.support.mqtt import MqttRecorder

    recorder = MqttRecorder(broker.port, "actionpipe/#")
    events_file = tmp_path / "events.jsonl"
    cfg = config(
        sources=[{"uri": str(v), "name": v.stem} for v in synth_streams],
        replay={"loop": True},
        outputs={"events_jsonl": str(events_file),
                 "mqtt": {"port": broker.port, "retry_max_s": 120.0, "flush_timeout_s": 20.0}},
    )
    script: list[str] = []

    def written_ids() -> list[str]:
        # Whole lines only: it is read while the run appends to it.
        lines = events_file.read_text().split("\n")[:-1] if events_file.exists() else []
        return [json.loads(line)["id"] for line in lines]

    def received_ids() -> list[str]:
        return [json.loads(p)["id"] for p in recorder.payloads("actionpipe/events")]

    def outages(supervisor) -> None:
        if script:
            return
        wait_until(lambda: received_ids(), 60)
        for outage in ("first", "second"):
            broker.stop()
            if outage == "first":
                time.sleep(30.0)
            else:  # down until an event is made that the broker cannot have
                down_at = len(written_ids())
                wait_until(lambda: len(written_ids()) > down_at, 60, poll_s=0.1)
            held = len(written_ids())
            broker.start()
            # Events made during the outage arrive well before the two-minute retry would have sent them.
            wait_until(lambda: len(received_ids()) >= held, 20)
            script.append(outage)
            time.sleep(3.0)

    summary = run_until(Supervisor(cfg), lambda s: len(script) == 2, timeout_s=200, during=outages)
    assert script == ["first", "second"]
    written = written_ids()
    wait_until(lambda: len(received_ids()) >= len(written), 20)
    received = received_ids()
    recorder.close()
    assert len(written) >= 8, "the replays should make events throughout for this test to mean anything"
    assert received == written  # each once (a broker's DUP redelivery is not a second copy), in order
    assert sum(row["events"] for row in summary.streams.values()) == len(written)


def test_events_a_stop_could_not_deliver_are_spooled_and_sent_first_by_the_next_run(synth_streams, tmp_path):
    """Run 1: the webhook's receiver is down throughout; at the stop its events go to spool_dir, not lost.
    Run 2, receiver up: run 1's events arrive first, each once, then run 2's own."""
    from tools.testbed.cameras import closed_port

    spool = tmp_path / "spool"
    sources = [{"uri": str(synth_streams[0]), "name": synth_streams[0].stem}]

    def run(url: str, events_file: Path):
        cfg = config(sources=sources, replay={"realtime": False},
                     outputs={"events_jsonl": str(events_file),
                              "webhook": {"url": url, "retry_max_s": 0.2, "flush_timeout_s": 0.5,
                                          "spool_dir": str(spool)}})
        run_until(Supervisor(cfg), lambda s: False, timeout_s=120)
        return [json.loads(line) for line in events_file.read_text().splitlines()]

    first = run(f"http://127.0.0.1:{closed_port()}/hook", tmp_path / "first.jsonl")
    assert first, "the replay should produce events for this test to mean anything"
    assert [json.loads(line) for line in (spool / "webhook.jsonl").read_text().splitlines()] == first
    receiver = Receiver()
    try:
        second = run(receiver.url, tmp_path / "second.jsonl")
    finally:
        receiver.stop()
    assert receiver.accepted == first + second
    assert not (spool / "webhook.jsonl").exists()
    # The same video twice makes the same events, but the second run's are not repeats of the first's.
    assert len({e["id"] for e in first + second}) == len(first) + len(second)


def _whole_lines(path: Path) -> int:
    """Complete lines in a file the run is appending to (0 before it exists)."""
    return path.read_text().count("\n") if path.exists() else 0


def test_events_a_broker_never_got_are_counted_as_lost_and_the_run_exits_3(synth_streams, broker, tmp_path):
    """The broker goes away for good after the first event: at the stop, what it never acknowledged is
    counted per output in the summary, named in its losses, and the exit status is 3. (The run is stopped
    once two events were made without the broker, or else ends with its replays.)"""
    from tests.support.mqtt import MqttRecorder

    recorder = MqttRecorder(broker.port, "actionpipe/#")
    events_file = tmp_path / "events.jsonl"
    cfg = config(
        sources=[{"uri": str(v), "name": v.stem} for v in synth_streams],
        outputs={"events_jsonl": str(events_file),
                 "mqtt": {"port": broker.port, "retry_max_s": 0.5, "flush_timeout_s": 0.5}},
    )
    gone: list[int] = []  # how many events the file held when the broker went away

    def take_the_broker_away(supervisor) -> None:
        if broker.process is not None and recorder.payloads("actionpipe/events"):
            broker.stop()
            gone.append(_whole_lines(events_file))

    summary = run_until(Supervisor(cfg), lambda s: bool(gone) and _whole_lines(events_file) >= gone[0] + 2,
                        timeout_s=120, during=take_the_broker_away)
    received = [json.loads(p)["id"] for p in recorder.payloads("actionpipe/events")]
    recorder.close()
    written = [json.loads(line)["id"] for line in events_file.read_text().splitlines()]
    mqtt = summary.outputs["mqtt"]
    assert received and len(written) > len(received), "events should have been made after the broker left"
    assert received == written[:len(received)]
    assert mqtt["delivered"] >= len(received) - 1  # the last one may have been taken before its PUBACK left
    assert mqtt["delivered"] + sum(mqtt["dropped"].values()) == len(written)  # each delivered or counted lost
    assert mqtt["dropped"].get("unsent_at_exit", 0) > 0
    assert any(line.startswith("output mqtt lost") for line in summary.losses)
    assert summary.exit_code == 3
