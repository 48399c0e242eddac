"""Network outputs off the scoring path: the buffer, the retry schedule, and a real webhook receiver
on loopback that fails its first attempts, refuses some records, and is down for a while."""

from __future__ import annotations

import random
import threading
import time

import pytest

from pipeline.backoff import Backoff
from pipeline.events import ActionEvent
from pipeline.outputs.delivery import BackgroundSink, DeliveryError, DropReport, RecordBuffer, RetrySchedule
from pipeline.outputs.webhook import WebhookTransport, is_temporary
from tests.support.waiting import wait_until
from tests.support.web import Receiver

FAST = Backoff(initial_s=0.01, max_s=0.05, multiplier=2.0, jitter=0.0)


def _event(i: int, stream: str = "cam1") -> ActionEvent:
    return ActionEvent(stream, "enter", "start" if i % 2 == 0 else "end", float(i), 0.9, 1000.0 + i, "threshold")


# -- pure parts ------------------------------------------------------------------------------------
def test_buffer_keeps_the_newest_records_and_says_how_many_made_room():
    buffer = RecordBuffer(3)
    assert [buffer.push(i) for i in range(5)] == [0, 0, 0, 1, 1]
    assert buffer.drain() == [2, 3, 4]
    assert len(buffer) == 0
    with pytest.raises(ValueError, match="at least one record"):
        RecordBuffer(0)


def test_retry_schedule_backs_off_and_resets_on_success():
    schedule = RetrySchedule(Backoff(initial_s=1.0, max_s=8.0, multiplier=2.0, jitter=0.0), random.Random(0))
    assert schedule.wait_s(100.0) == 0.0
    assert [schedule.failed(100.0) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert schedule.wait_s(100.0) == 8.0 and schedule.wait_s(105.0) == 3.0 and schedule.wait_s(200.0) == 0.0
    schedule.succeeded()
    assert schedule.failures == 0 and schedule.wait_s(100.0) == 0.0
    assert schedule.failed(100.0) == 1.0


@pytest.mark.parametrize("status,temporary", [(500, True), (503, True), (429, True), (408, True),
                                              (400, False), (401, False), (404, False), (410, False)])
def test_which_answers_are_worth_retrying(status, temporary):
    assert is_temporary(status) is temporary


# -- the background sink with a scripted transport ----------------------------------------------------
class ScriptedTransport:
    name = "scripted"

    def __init__(self, failures_before_success: int = 0, refuse: set | None = None, block: threading.Event | None = None):
        self.failures_left = failures_before_success
        self.refuse = refuse or set()
        self.block = block
        self.attempts: list = []
        self.delivered: list = []
        self.closed = False

    def deliver(self, record) -> None:
        self.attempts.append(record)
        if self.block is not None:
            self.block.wait(10)
        if record in self.refuse:
            raise DeliveryError("no such hook", permanent=True)
        if self.failures_left > 0:
            self.failures_left -= 1
            raise DeliveryError("connection refused")
        self.delivered.append(record)

    def close(self) -> None:
        self.closed = True


def test_records_go_out_in_order_after_failures_without_loss_or_duplicates():
    transport = ScriptedTransport(failures_before_success=4)
    sink = BackgroundSink(transport, capacity=100, backoff=FAST)
    for i in range(20):
        sink.emit(i)
    wait_until(lambda: len(transport.delivered) == 20)
    sink.close()
    assert transport.delivered == list(range(20))
    assert transport.attempts[:5] == [0, 0, 0, 0, 0]  # the first record is retried, not skipped
    assert sink.dropped == {} and transport.closed


def test_emit_never_waits_for_a_stuck_receiver_and_a_full_buffer_drops_the_oldest():
    release = threading.Event()
    reports: list[DropReport] = []
    transport = ScriptedTransport(block=release)
    sink = BackgroundSink(transport, capacity=5, backoff=FAST, on_drop=reports.append)
    sink.emit("first")
    wait_until(lambda: transport.attempts == ["first"])  # the thread is now stuck in deliver
    started = time.monotonic()
    for i in range(8):
        sink.emit(i)
    assert time.monotonic() - started < 0.5
    assert sink.pending == 6  # the record in flight, and the newest five
    release.set()
    wait_until(lambda: sink.pending == 0)
    sink.close()
    assert transport.delivered == ["first", 3, 4, 5, 6, 7]
    assert sink.dropped == {"buffer_full": 3}
    assert sum(r.count for r in reports if r.reason == "buffer_full") == 3


def test_a_refused_record_is_dropped_and_counted_and_the_rest_go_on():
    transport = ScriptedTransport(refuse={2})
    sink = BackgroundSink(transport, capacity=10, backoff=FAST)
    for i in range(5):
        sink.emit(i)
    wait_until(lambda: len(transport.delivered) == 4)
    sink.close()
    assert transport.delivered == [0, 1, 3, 4]
    assert sink.dropped == {"refused": 1}


def test_shutdown_gives_up_after_the_flush_timeout_and_counts_what_was_left():
    transport = ScriptedTransport(failures_before_success=10**9)
    sink = BackgroundSink(transport, capacity=10, backoff=FAST, flush_timeout_s=0.2)
    for i in range(4):
        sink.emit(i)
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 2.0
    assert sink.dropped == {"unsent_at_exit": 4}
    with pytest.raises(RuntimeError, match="closed"):
        sink.emit(5)


class ReadyAwareTransport(ScriptedTransport):
    """Fails until ``back`` is called, which, like an MQTT reconnect, tells the sink it can deliver again."""

    def __init__(self) -> None:
        super().__init__(failures_before_success=10**9)
        self._ready = None

    def on_ready(self, callback) -> None:
        self._ready = callback

    def back(self) -> None:
        self.failures_left = 0
        self._ready()


def test_a_transport_that_is_ready_again_wakes_the_retry_instead_of_waiting_out_its_backoff():
    transport = ReadyAwareTransport()
    slow = Backoff(initial_s=60.0, max_s=60.0, multiplier=2.0, jitter=0.0)
    sink = BackgroundSink(transport, capacity=10, backoff=slow, flush_timeout_s=0.0)
    try:
        sink.emit("a")
        wait_until(lambda: transport.attempts == ["a"])  # failed; the next try is a minute away
        sink.emit("b")
        transport.back()
        wait_until(lambda: transport.delivered == ["a", "b"], 5)
    finally:
        sink.close()
    assert sink.dropped == {}


class SurprisingTransport(ScriptedTransport):
    """Raises what no transport should (a library's RuntimeError), once."""

    def deliver(self, record) -> None:
        self.attempts.append(record)
        if len(self.attempts) == 1:
            raise RuntimeError("Message publish failed: The client is not currently connected.")
        self.delivered.append(record)


def test_an_unexpected_error_in_a_transport_is_shown_and_retried_and_the_output_lives_on(caplog):
    transport = SurprisingTransport()
    sink = BackgroundSink(transport, capacity=10, backoff=FAST)
    for i in range(3):
        sink.emit(i)
    wait_until(lambda: transport.delivered == [0, 1, 2])
    sink.close()
    assert transport.attempts == [0, 0, 1, 2]
    assert sink.dropped == {}
    shown = [r for r in caplog.records if "RuntimeError" in r.getMessage()]
    assert shown and shown[0].exc_info is not None  # the traceback is in the log, not lost with a dead thread


def test_what_a_stop_could_not_deliver_is_spooled_and_goes_out_first_in_the_next_run(tmp_path):
    from pipeline.outputs.spool import FileSpool

    def spool() -> FileSpool:
        return FileSpool(tmp_path / "spool", "webhook", ActionEvent.to_json, ActionEvent.from_json)

    spooled: list[int] = []
    down = ScriptedTransport(failures_before_success=10**9)
    first = BackgroundSink(down, capacity=10, backoff=FAST, flush_timeout_s=0.1, spool=spool(),
                           on_spooled=spooled.append)
    events = [_event(i) for i in range(4)]
    for event in events:
        first.emit(event)
    first.close()
    assert first.dropped == {} and first.spooled == 4 and spooled == [4]  # kept, not lost
    assert len((tmp_path / "spool" / "webhook.jsonl").read_text().splitlines()) == 4

    up = ScriptedTransport()
    second = BackgroundSink(up, capacity=10, backoff=FAST, spool=spool())
    second.emit(_event(9))
    wait_until(lambda: len(up.delivered) == 5)
    second.close()
    assert up.delivered == [*events, _event(9)]  # the earlier run's first, in their order
    assert not (tmp_path / "spool" / "webhook.jsonl").exists()  # nothing left to send


def test_a_spool_line_that_is_not_an_event_is_named_and_skipped(tmp_path, caplog):
    from pipeline.outputs.spool import FileSpool

    folder = tmp_path / "spool"
    folder.mkdir()
    good = _event(1).to_json()
    import json

    (folder / "mqtt.jsonl").write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"stream": "x"}) + "\n")
    records = FileSpool(folder, "mqtt", ActionEvent.to_json, ActionEvent.from_json).load()
    assert records == [_event(1)]
    assert [r.getMessage() for r in caplog.records if "line 2" in r.getMessage() or "line 3" in r.getMessage()]


def test_a_spool_folder_that_cannot_be_made_names_the_setting(tmp_path):
    from pipeline.errors import ConfigError
    from pipeline.outputs.spool import FileSpool

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="outputs.webhook.spool_dir"):
        FileSpool(blocker / "spool", "webhook", ActionEvent.to_json, ActionEvent.from_json)


# -- a real HTTP receiver on loopback ---------------------------------------------------------------
@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_webhook_retries_server_errors_and_delivers_each_event_once_in_order(receiver):
    receiver.statuses = [503, 500, 429]
    sink = BackgroundSink(WebhookTransport(receiver.url, timeout_s=2.0), capacity=100, backoff=FAST)
    events = [_event(i) for i in range(6)]
    for event in events:
        sink.emit(event)
    wait_until(lambda: len(receiver.accepted) == 6)
    sink.close()
    assert receiver.accepted == [e.to_json() for e in events]
    assert receiver.requests == 9  # three refusals of the first event, then one request per event
    assert sink.dropped == {}
    assert receiver.headers[0]["Content-Type"] == "application/json"


def test_webhook_drops_what_the_receiver_rejects_for_good(receiver):
    receiver.statuses = [200, 404, 200]
    reports: list[DropReport] = []
    sink = BackgroundSink(WebhookTransport(receiver.url), capacity=100, backoff=FAST, on_drop=reports.append)
    for i in range(3):
        sink.emit(_event(i))
    wait_until(lambda: receiver.requests == 3)
    sink.close()
    assert [e["t"] for e in receiver.accepted] == [0.0, 2.0]
    assert reports == [DropReport("webhook", "refused", 1)]


def test_webhook_survives_a_receiver_that_is_down_for_a_while(receiver):
    receiver.stop()
    sink = BackgroundSink(WebhookTransport(receiver.url, timeout_s=1.0), capacity=100, backoff=FAST)
    for i in range(5):
        sink.emit(_event(i))
    time.sleep(0.3)  # several refused connections
    assert receiver.accepted == [] and sink.pending == 5
    receiver.start()  # the same port
    wait_until(lambda: len(receiver.accepted) == 5)
    sink.close()
    assert [e["t"] for e in receiver.accepted] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_webhook_credentials_become_a_header_and_stay_out_of_errors(receiver):
    url = f"http://hook:s3cret-token@127.0.0.1:{receiver.port}/hook?key=abc123"
    transport = WebhookTransport(url)
    transport.deliver(_event(0))
    assert receiver.headers[0]["Authorization"].startswith("Basic ")
    receiver.statuses = [401]
    with pytest.raises(DeliveryError) as info:
        transport.deliver(_event(1))
    assert info.value.permanent
    assert "s3cret" not in str(info.value) and "abc123" not in str(info.value)
    with pytest.raises(ValueError, match="must start with http"):
        WebhookTransport("ftp://example.com/x")
