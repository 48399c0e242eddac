"""The capture stage's parts with injected clocks and a real ZeroMQ socket pair:
replay pacing, the per-stream outbox's drop policies, the sender's sequence
numbering, and a stream runner taken through open failures, a drop, a
reconnect and a removal by a scripted source (a stand-in for a camera, which
this machine does not have; the real RTSP/HTTP paths are in tests/system/test_surviving_sources.py).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from pipeline.sources.frames import RawFrame, SourceOpenError
from pipeline.stages.capture.outbox import EndOfSequence, OutFrame, StreamCounters, StreamOutbox
from pipeline.stages.capture.runner import ReplayPacer, StreamRunner
from pipeline.stages.capture.sender import FrameSender
from pipeline.stages.settings import CaptureSettings
from pipeline.transport.control import AddStream
from pipeline.transport.messages import Flags, decode_frame


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _frame(sequence: int, t: float, reason: str = "open", wall: float | None = None) -> OutFrame:
    return OutFrame(sequence, reason, t, time.time() if wall is None else wall, np.zeros((4, 4, 3), np.uint8))


def _drain(outbox: StreamOutbox) -> list:
    """Everything queued, oldest first, taken as the sender takes it (under the outbox's lock)."""
    items = []
    with outbox.lock:
        while (item := outbox.head()) is not None:
            items.append(item)
            outbox.pop()
    return items


def test_replay_pacer_releases_each_frame_at_its_stream_time():
    clock = FakeClock()
    pacer = ReplayPacer(clock)
    assert pacer.delay(0.0) == 0.0
    clock.now += 0.01
    assert abs(pacer.delay(0.5) - 0.49) < 1e-9
    clock.now += 1.0  # running late: no waiting, no attempt to catch up by skipping
    assert pacer.delay(1.0) == 0.0


def test_replay_pacer_at_a_speed_runs_the_recording_faster_or_slower_than_its_own_rate():
    clock = FakeClock()
    fast = ReplayPacer(clock, speed=2.0)  # also a camera clock 0.5% fast: speed 1.005
    assert fast.delay(10.0) == 0.0  # the first frame anchors the replay, whatever its time
    assert abs(fast.delay(11.0) - 0.5) < 1e-9
    clock.now += 0.5
    assert abs(fast.delay(11.0)) < 1e-9
    drifting = ReplayPacer(clock, speed=1.005)
    drifting.delay(0.0)
    assert abs(drifting.delay(201.0) - 200.0) < 1e-9  # 1 s gained every 201 s of recording
    with pytest.raises(ValueError, match="positive"):
        ReplayPacer(clock, speed=0.0)


def test_live_outbox_drops_the_oldest_frame_counts_it_and_never_drops_an_end_marker():
    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 0, live=True, capacity=2, stale_after_s=5.0, counters=counters, wake=threading.Event())
    stop = threading.Event()
    outbox.put_frame(_frame(1, 0.0), stop)
    outbox.put_end(EndOfSequence(1, "reconnect", 0.0))
    for i in range(1, 5):
        assert outbox.put_frame(_frame(2, float(i)), stop)
    kept = _drain(outbox)
    assert [type(i).__name__ for i in kept] == ["EndOfSequence", "OutFrame", "OutFrame"]
    assert [i.t for i in kept[1:]] == [3.0, 4.0]
    assert counters.dropped == {"backpressure": 3} and counters.captured == 3


def test_replay_outbox_blocks_its_reader_instead_of_dropping():
    counters = StreamCounters("file", None)
    outbox = StreamOutbox("file", 0, live=False, capacity=2, stale_after_s=5.0, counters=counters, wake=threading.Event())
    stop = threading.Event()
    assert outbox.put_frame(_frame(1, 0.0), stop) and outbox.put_frame(_frame(1, 0.1), stop)
    done = threading.Event()

    def third():
        outbox.put_frame(_frame(1, 0.2), stop)
        done.set()

    threading.Thread(target=third, daemon=True).start()
    assert not done.wait(0.3), "a full replay outbox must block, not drop"
    with outbox.lock:
        outbox.pop()
    assert done.wait(2.0)
    assert counters.dropped == {}
    # A stop releases a blocked reader, and the final END closes the outbox to further frames.
    outbox.put_end(EndOfSequence(1, "stopped", 0.2))
    assert not outbox.put_frame(_frame(1, 0.3), stop)


@pytest.fixture()
def socket_pair():
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    endpoint = "inproc://frames"
    pull.bind(endpoint)
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    yield push, pull
    push.close(linger=0)
    pull.close(linger=0)
    context.term()


def _received(pull, count: int) -> list:
    out = []
    while len(out) < count and pull.poll(2000):
        out.append(decode_frame(pull.recv_multipart(copy=False))[0])
    return out


def test_sender_numbers_what_it_sends_so_dropped_frames_leave_no_gap(socket_pair):
    push, pull = socket_pair
    sender = FrameSender(push, "capture:0")
    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 3, live=True, capacity=2, stale_after_s=5.0, counters=counters, wake=sender.wake)
    stop = threading.Event()
    # Four frames into a two-frame live outbox before the sender runs: the two oldest are dropped.
    for t in (0.0, 0.25, 0.5):
        outbox.put_frame(_frame(1, t), stop)
    outbox.put_end(EndOfSequence(1, "reconnect", 0.5))
    outbox.put_frame(_frame(2, 1.0, "reconnect"), stop)
    outbox.put_end(EndOfSequence(2, "removed", 1.0))
    sender.attach(outbox)
    sender.start()
    headers = _received(pull, 4)
    sender.finish()
    sender.join(5)
    assert [(h.seq, h.t, h.flags, h.reason) for h in headers] == [
        (0, 0.5, int(Flags.START), "open"),
        (1, 0.5, int(Flags.END), "reconnect"),
        (2, 1.0, int(Flags.START), "reconnect"),
        (3, 1.0, int(Flags.END), "removed"),
    ]
    assert {h.generation for h in headers} == {3} and all(h.live for h in headers)
    assert counters.sent == 2 and counters.dropped == {"backpressure": 2} and counters.captured == 4


def test_sender_drops_a_live_frame_that_could_only_go_out_stale(socket_pair):
    push, pull = socket_pair
    sender = FrameSender(push, "capture:0")
    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 0, live=True, capacity=4, stale_after_s=1.0, counters=counters, wake=sender.wake)
    stop = threading.Event()
    outbox.put_frame(_frame(1, 0.0, wall=time.time() - 10.0), stop)  # read 10 s ago, e.g. while downstream restarted
    outbox.put_frame(_frame(1, 0.25), stop)
    sender.attach(outbox)
    sender.start()
    headers = _received(pull, 1)
    sender.finish()
    sender.join(5)
    # The stale frame is dropped and counted; the START moves to the first frame actually sent.
    assert [(h.seq, h.t, h.flags) for h in headers] == [(0, 0.25, int(Flags.START))]
    assert counters.dropped == {"stale": 1} and counters.sent == 1


class ScriptedSource:
    """A live source that serves ``frames`` frames, then drops (or, with ``hold_until``, waits for it)."""

    is_live = True
    fps = 25.0
    decode_errors = 0
    ended_early = False

    def __init__(self, clock: FakeClock, frames: int, hold_until=None) -> None:
        self._clock = clock
        self._left = frames
        self._hold_until = hold_until

    def read(self, want=lambda t: True):
        if self._left == 0:
            if self._hold_until is None:
                return None  # the camera dropped the stream
            while not self._hold_until():  # a camera still streaming, slower than this test
                time.sleep(0.005)
        self._left = max(0, self._left - 1)
        self._clock.now += 0.04
        t = self._clock.now - 100.0
        return RawFrame(t, np.full((8, 8, 3), 128, np.uint8) if want(t) else None)

    def close(self) -> None:
        pass


def test_a_stream_runner_retries_a_camera_that_is_down_then_reconnects_after_a_drop():
    clock = FakeClock()
    opens = {"n": 0}
    events: list = []

    def opener(source, **kwargs):
        opens["n"] += 1
        if opens["n"] <= 2:
            raise SourceOpenError("cannot open rtsp://***@cam/1: connection refused by cam:554", permanent=False)
        if opens["n"] == 3:
            return ScriptedSource(clock, frames=25)
        return ScriptedSource(clock, frames=8, hold_until=lambda: runner._stop_event.is_set())

    spec = AddStream(stream="cam", uri="rtsp://user:pw@cam/1", live=True, realtime=True, loop=False, generation=0,
                     open_timeout_s=1.0, stale_after_s=5.0, buffer_frames=1000,
                     reconnect={"initial_s": 0.5, "max_s": 4.0, "multiplier": 2.0, "jitter": 0.0, "max_attempts": None})
    settings = CaptureSettings(stage="capture:0", control_endpoint="", parent_pid=0, run_dir="", embed_endpoints=(),
                               width=8, height=8, step_rate=4.0)
    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 0, live=True, capacity=1000, stale_after_s=5.0, counters=counters,
                          wake=threading.Event())
    runner = StreamRunner(spec, settings, outbox, events.append, opener=opener, clock=clock)

    # The WAITs of the backoff go through the runner's stop event: make them advance the fake clock instead.
    def fake_wait(timeout=None):
        clock.now += timeout or 0.0
        return runner._stop_event.is_set()

    runner._stop_event.wait = fake_wait
    runner.start()
    deadline = time.monotonic() + 10
    while opens["n"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.request_stop("removed")
    runner.join(5)
    assert not runner.is_alive()
    states = [(e.state, e.reason) for e in events]
    assert states == [
        ("connecting", "open_failed"), ("connecting", "open_failed"), ("live", "opened"),
        ("reconnecting", "read_failed"), ("live", "opened"), ("ended", "removed"),
    ]
    # Backoff: 0.5 s then 1.0 s between the failed opens (jitter 0 here).
    assert [e.retry_in_s for e in events[:2]] == [0.5, 1.0]
    items = _drain(outbox)
    sequences = [(type(i).__name__, i.sequence, getattr(i, "start_reason", None) or getattr(i, "reason", None)) for i in items]
    first_seq = [s for s in sequences if s[1] == 1]
    assert first_seq[0] == ("OutFrame", 1, "open") and first_seq[-1] == ("EndOfSequence", 1, "reconnect")
    second = [s for s in sequences if s[1] == 2]
    assert second[0] == ("OutFrame", 2, "reconnect") and second[-1] == ("EndOfSequence", 2, "removed")
    # 25 frames at 25 fps = 1 s sampled at 4 steps/s: steps at 0.04 (first), 0.28, 0.52, 0.76, 1.0.
    assert len([s for s in first_seq if s[0] == "OutFrame"]) == 5
    # No frame is repeated or invented across the reconnect: stream time only goes forward.
    times = [i.t for i in items if isinstance(i, OutFrame)]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_an_end_marker_is_skipped_when_nothing_of_its_sequence_was_sent(socket_pair):
    push, pull = socket_pair
    sender = FrameSender(push, "capture:0")
    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 0, live=True, capacity=1, stale_after_s=5.0, counters=counters, wake=sender.wake)
    stop = threading.Event()
    outbox.put_frame(_frame(1, 0.0), stop)
    outbox.put_end(EndOfSequence(1, "reconnect", 0.0))
    outbox.put_frame(_frame(2, 1.0, "reconnect"), stop)  # evicts sequence 1's only frame
    outbox.put_end(EndOfSequence(2, "removed", 1.0))
    sender.attach(outbox)
    sender.start()
    headers = _received(pull, 2)
    sender.finish()
    sender.join(5)
    assert [(h.seq, h.flags, h.reason) for h in headers] == [(0, int(Flags.START), "reconnect"), (1, int(Flags.END), "removed")]


def _live_spec(name: str = "cam", **reconnect) -> AddStream:
    return AddStream(stream=name, uri="rtsp://user:pw@cam/1", live=True, realtime=True, loop=False, generation=0,
                     open_timeout_s=1.0, stale_after_s=5.0, buffer_frames=1000,
                     reconnect={"initial_s": 0.5, "max_s": 30.0, "multiplier": 2.0, "jitter": 0.0,
                                "max_attempts": None, **reconnect})


def _settings() -> CaptureSettings:
    return CaptureSettings(stage="capture:0", control_endpoint="", parent_pid=0, run_dir="", embed_endpoints=(),
                           width=8, height=8, step_rate=4.0)


@pytest.mark.parametrize("opens", [True, False], ids=["the open succeeds", "the open fails"])
def test_a_stream_removed_while_its_source_is_opening_ends_once_and_cleanly(opens, caplog):
    """A DELETE while OpenCV is still opening (it may block for open_timeout_s): the stage ends the stream at
    once; when the open returns, late, the thread leaves quietly (no state change after the end, no traceback)."""
    entered, release = threading.Event(), threading.Event()
    clock = FakeClock()
    closed: list = []

    class Reader(ScriptedSource):
        def close(self) -> None:
            closed.append(True)

    def opener(source, **kwargs):
        entered.set()
        release.wait(10)
        if not opens:
            raise SourceOpenError("cannot open rtsp://***@cam/1: cam:554 accepted but sent nothing", permanent=False)
        return Reader(clock, frames=5)

    events: list = []
    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 0, live=True, capacity=10, stale_after_s=5.0, counters=counters,
                          wake=threading.Event())
    runner = StreamRunner(_live_spec(), _settings(), outbox, events.append, opener=opener, clock=clock)
    runner.start()
    assert entered.wait(5)
    runner.request_stop("removed")
    runner.abandon()  # what the stage does once the stop grace has passed
    release.set()
    runner.join(5)

    assert not runner.is_alive()
    assert [(e.state, e.reason) for e in events] == [("ended", "removed")]
    assert closed == ([True] if opens else [])  # a reader that opened too late is closed, never read
    assert "unexpectedly" not in caplog.text and "Traceback" not in caplog.text
    assert [type(i).__name__ for i in _drain(outbox)] == ["EndOfSequence"]


def test_a_one_frame_per_connection_source_backs_off_shows_flapping_and_logs_little(caplog):
    """A server that sends one frame per connection (VLC's MJPEG does), over 90 s of stream time:
    the backoff keeps growing instead of starting over at every open, the stream shows as
    reconnecting/flapping rather than live, and the log says so in a few lines, not hundreds."""
    clock = FakeClock()
    opens = {"n": 0}
    events: list = []

    def opener(source, **kwargs):
        opens["n"] += 1
        return ScriptedSource(clock, frames=1)

    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 0, live=True, capacity=10_000, stale_after_s=5.0, counters=counters,
                          wake=threading.Event())
    runner = StreamRunner(_live_spec(), _settings(), outbox, events.append, opener=opener, clock=clock)

    def fake_wait(timeout=None):
        clock.now += timeout or 0.0
        if clock.now > 190.0:  # 90 s of stream time: the operator removes the stream
            runner.request_stop("removed")
        return runner._stop_event.is_set()

    runner._stop_event.wait = fake_wait
    caplog.set_level("INFO", logger="pipeline.stages.capture.runner")
    runner.start()
    runner.join(10)

    assert not runner.is_alive()
    assert opens["n"] <= 9  # waits of 0.5, 1, 2, 4, 8, 16, 30, 30 s: not one every 0.5 s (180)
    flapping = [e for e in events if e.reason == "flapping"]
    assert flapping and all(e.state == "reconnecting" for e in flapping)
    assert [e.state for e in events].count("live") == 2  # the first open, and one reopen before it was seen to flap
    assert "dropped" in flapping[-1].error and "in a row" in flapping[-1].error
    lines = [r for r in caplog.records if r.name == "pipeline.stages.capture.runner"]
    assert len(lines) <= 20, [r.getMessage() for r in lines]


def test_with_auto_the_transport_that_worked_is_kept_for_reconnects_and_said_once(caplog):
    """The first open finds the server takes only UDP; every reopen asks for UDP straight away."""
    clock = FakeClock()
    asked: list[str] = []

    class UdpOnly(ScriptedSource):
        transport = "udp"

    def opener(source, rtsp_transport="auto", **kwargs):
        asked.append(rtsp_transport)
        return UdpOnly(clock, frames=2)

    events: list = []
    counters = StreamCounters("cam", None)
    outbox = StreamOutbox("cam", 0, live=True, capacity=1000, stale_after_s=5.0, counters=counters,
                          wake=threading.Event())
    runner = StreamRunner(_live_spec(), _settings(), outbox, events.append, opener=opener, clock=clock)

    def fake_wait(timeout=None):
        clock.now += timeout or 0.0
        if len(asked) >= 3:
            runner.request_stop("removed")
        return runner._stop_event.is_set()

    runner._stop_event.wait = fake_wait
    caplog.set_level("INFO", logger="pipeline.stages.capture.runner")
    runner.start()
    runner.join(10)

    assert asked[:3] == ["auto", "udp", "udp"]
    assert caplog.text.count("the server refuses RTSP over TCP; reading it over UDP from now on") == 1
