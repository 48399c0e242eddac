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
