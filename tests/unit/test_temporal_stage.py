"""The temporal stage's sequence handling, message by message over a real ZeroMQ socket,
with the demo head: generations, restarts, END reasons, lost upstream frames, malformed input."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from engines.spec import STATS_DIM
from engines.temporal_head import load_head
from pipeline.config import EventsConfig, OutputsConfig, TemporalConfig
from pipeline.events import ActionEventDetector
from pipeline.outputs.sinks import SinkFanOut
from pipeline.stages.settings import TemporalSettings
from pipeline.stages.temporal.reorder import ReorderBuffer
from pipeline.stages.temporal.state_table import StreamStateTable
from pipeline.stages.temporal.worker import TemporalWorker
from pipeline.transport.messages import EmbeddingHeader, Flags, encode_embedding
from tests.support.fakes import Collect, ManualClock
from tests.support.runs import MODEL


@pytest.fixture(scope="module")
def head():
    return load_head(MODEL)[0]


@pytest.fixture()
def rig(head):
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind("inproc://embeddings")
    push = context.socket(zmq.PUSH)
    push.connect("inproc://embeddings")
    made = []

    def make(sleep=lambda seconds: None, **settings):
        clock = ManualClock()
        events, scores = Collect(), Collect()
        worker = TemporalWorker(
            TemporalSettings(stage="temporal", control_endpoint="", parent_pid=0, run_dir="", model_path=str(MODEL),
                             temporal=TemporalConfig(max_batch_size=8), events=EventsConfig(), outputs=OutputsConfig(),
                             in_endpoint="inproc://embeddings", **settings),
            StreamStateTable(head, 8, 30.0),
            ReorderBuffer(64, 60.0, first_seq=0), ActionEventDetector(head.config.classes, EventsConfig().hysteresis()),
            pull, SinkFanOut([events]), SinkFanOut([scores]), head.config.classes, clock=clock,
            live_reorder=ReorderBuffer(8, 2.0, first_seq=0), sleep=sleep,
        )
        made.append(worker)
        return worker, events, scores, clock

    rng = np.random.default_rng(3)

    def send(stream, seq, t, generation=0, flags=0, reason="", pixels=True):
        header = EmbeddingHeader(stream, seq, t, 0.0, flags, 0.0, 1280 if pixels else 0, STATS_DIM if pixels else 0,
                                 generation=generation, reason=reason)
        embedding = rng.normal(size=1280).astype(np.float32) if pixels else None
        stats = rng.uniform(size=STATS_DIM).astype(np.float32) if pixels else None
        push.send(encode_embedding(header, embedding, stats))

    yield make, send, push
    push.close(linger=0)
    pull.close(linger=0)
    context.term()


def _pump(worker: TemporalWorker) -> None:
    """What the worker's loop does until it is idle: take messages, step, keep house, step what that freed."""
    while worker._receive(0.05):
        pass
    while worker._step_round():
        pass
    worker._housekeeping()
    while worker._step_round():
        pass


def test_a_new_generation_flushes_the_old_one_in_order_and_counts_its_stragglers_late(rig):
    make, send, _ = rig
    worker, _, scores, _ = make()
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    send("cam", 2, 0.5)  # seq 1 is still with a (dead) embed worker
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0]
    # The capture process was replaced: generation 1 starts at seq 0 and resumes after t=0.5.
    send("cam", 0, 0.75, generation=1, flags=Flags.START, reason="restart")
    send("cam", 1, 0.25, generation=0)  # the old generation's straggler
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0, 0.5, 0.75]
    tally = worker.tallies["cam"]
    assert tally.dropped == {"stage_crash": 1, "late": 1}  # seq 1 skipped in the flush, then arrived late


def test_steps_repeated_after_a_capture_restart_are_dropped_and_the_start_moves_forward(rig):
    make, send, _ = rig
    worker, _, scores, _ = make()
    for seq, t in enumerate((0.0, 0.25, 0.5, 0.75)):
        send("cam", seq, t, flags=Flags.START if seq == 0 else 0, reason="open" if seq == 0 else "")
    _pump(worker)
    # The replacement resumed from a heartbeat that lagged: 0.5 and 0.75 come again.
    for seq, t in enumerate((0.5, 0.75, 1.0, 1.25)):
        send("cam", seq, t, generation=1, flags=Flags.START if seq == 0 else 0, reason="restart" if seq == 0 else "")
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert worker.tallies["cam"].dropped == {"stage_crash": 2}
    # The START of the dropped repeat went to the first step scored: the state was reset there.
    assert worker._table.row_of("cam") is not None


def test_end_reasons_close_open_actions_with_that_reason_and_a_final_end_forgets_the_window(rig, head):
    make, send, _ = rig
    worker, events, _, _ = make()
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    _pump(worker)
    # Force an open action, as if the detector had started one.
    worker._detector._streams["cam"].classes[1].active = True
    send("cam", 1, 0.0, flags=Flags.END, reason="reconnect", pixels=False)
    _pump(worker)
    assert [(e.action, e.kind, e.reason) for e in events.records] == [(head.config.classes[1], "end", "reconnect")]
    assert worker._table.row_of("cam") is None  # state freed
    assert ("cam", 0) in worker._replay_reorder.streams  # a reconnect keeps numbering: the window stays
    send("cam", 2, 1.0, flags=Flags.START, reason="reconnect")
    send("cam", 3, 1.0, flags=Flags.END, reason="removed", pixels=False)
    _pump(worker)
    assert ("cam", 0) not in worker._replay_reorder.streams and worker.tallies["cam"].ended


def test_a_restarted_worker_takes_numbering_as_it_comes_and_closes_its_predecessors_actions(rig):
    make, send, _ = rig
    worker, events, scores, _ = make(restarted=True, known_generations={"cam": 2},
                                     orphaned_actions={"cam": {"t": 41.0, "actions": {"enter": 0.8}}})
    worker.close_orphaned_actions()
    assert [(e.stream, e.action, e.kind, e.t, e.reason) for e in events.records] == [("cam", "enter", "end", 41.0, "restart")]
    send("cam", 171, 41.25, generation=2)  # mid-sequence: no START, numbering far from 0
    send("cam", 172, 41.5, generation=2)
    _pump(worker)
    assert [r.t for r in scores.records] == [41.25, 41.5]  # not held waiting for seq 0
    assert worker.tallies["cam"].dropped == {}


def test_frames_held_by_a_dead_embed_worker_are_given_up_without_waiting_for_the_timeout(rig):
    from pipeline.stages.temporal.worker import UPSTREAM_LOST_GRACE_S
    from pipeline.transport.control import UpstreamLost

    make, send, _ = rig
    worker, _, scores, clock = make()
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    send("cam", 2, 0.5)
    send("cam", 3, 0.75)
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0]  # waiting for seq 1 (replay: up to 60 s)
    worker.handle(UpstreamLost("embed:1", 1))
    clock.now += UPSTREAM_LOST_GRACE_S
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0, 0.5, 0.75]
    assert worker.tallies["cam"].dropped == {"stage_crash": 1}


def test_with_one_embed_worker_its_successors_first_frame_gives_up_what_died_with_it(rig):
    """Issue 18: the one embed worker died holding seq 2; the frames behind the gap come only from its successor,
    seconds later, long after the grace. The replay's window must not hold the stream for its 60 s timeout."""
    from pipeline.stages.temporal.worker import UPSTREAM_LOST_GRACE_S
    from pipeline.transport.control import UpstreamLost

    make, send, _ = rig
    worker, _, scores, clock = make()
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    send("cam", 1, 0.25)
    _pump(worker)
    worker.handle(UpstreamLost("embed:0", 0))
    clock.now += UPSTREAM_LOST_GRACE_S
    _pump(worker)  # the sweep: nothing is held yet, so nothing to skip
    clock.now += 1.5  # the restart: backoff, process start, model load
    send("cam", 3, 0.75)  # the successor's first frame
    send("cam", 4, 1.0)
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0, 0.25, 0.75, 1.0]
    assert worker.tallies["cam"].dropped == {"stage_crash": 1}
    assert worker._replay_reorder.held() == 0


def test_a_gap_left_by_a_slower_worker_still_waits_after_another_worker_died(rig):
    """Only the dead worker's successor says what is lost: a survivor's gap is filled as usual."""
    from pipeline.stages.temporal.worker import UPSTREAM_LOST_GRACE_S
    from pipeline.transport.control import UpstreamLost

    make, send, _ = rig
    worker, _, scores, clock = make()
    worker.handle(UpstreamLost("embed:1", 1))
    clock.now += UPSTREAM_LOST_GRACE_S
    _pump(worker)
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    send("cam", 2, 0.5)  # worker 0 (the rig's default): seq 1 is on its way through worker 2
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0]
    send("cam", 1, 0.25)
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0, 0.25, 0.5]
    assert worker.tallies["cam"].dropped == {}


def test_malformed_messages_are_skipped(rig):
    make, send, push = rig
    worker, _, scores, _ = make()
    push.send_multipart([b"embedding", b"{broken"])
    push.send_multipart([b"frame", b"{}", b"x"])
    push.send(b"\x01")
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    _pump(worker)
    assert [r.t for r in scores.records] == [0.0]


def test_ready_streams_are_stepped_together_in_one_round_that_waits_at_most_round_wait(rig):
    make, send, _ = rig
    worker, _, scores, clock = make()
    worker._rounds.min_expected = 0.0  # as with many streams: rounds wait (rounds.py decides when that pays)
    rounds = []
    step = worker._table.step
    worker._table.step = lambda inputs, now: rounds.append(sorted(x.stream for x in inputs)) or step(inputs, now)
    for cam in ("a", "b", "c"):  # the first frames: one round, whoever holds state is ready
        send(cam, 0, 0.0, flags=Flags.START, reason="open")
    while worker.work(False) and len(scores.records) < 3:
        pass
    assert rounds == [["a", "b", "c"]]
    send("a", 1, 0.25)
    worker.work(False)
    worker.work(False)
    assert len(rounds) == 1  # "a" waits for the others, within the round's 40 ms
    clock.now += 0.01
    send("b", 1, 0.25)
    worker.work(False)
    assert len(rounds) == 1
    clock.now += 0.031  # 41 ms since "a" was ready: the round goes without "c"
    worker.work(False)
    assert rounds[1:] == [["a", "b"]]
    send("c", 1, 0.25)
    worker.work(False)
    clock.now += 0.04
    worker.work(False)
    assert rounds[2:] == [["c"]]
    assert [r.t for r in scores.records if r.stream == "a"] == [0.0, 0.25]


def test_while_a_round_is_open_the_worker_sleeps_until_it_is_due_and_takes_what_came_in_one_gulp(rig):
    make, send, _ = rig
    slept = []

    def sleep(seconds):  # the clock moves as a real sleep would move it
        slept.append(round(seconds, 6))
        clock.now += seconds

    worker, _, scores, clock = make(sleep=sleep)
    worker._rounds.min_expected = 0.0  # as with many streams: rounds wait
    rounds = []
    step = worker._table.step
    worker._table.step = lambda inputs, now: rounds.append(sorted(x.stream for x in inputs)) or step(inputs, now)
    for cam in ("a", "b", "c"):
        send(cam, 0, 0.0, flags=Flags.START, reason="open")
    while worker.work(False) and len(scores.records) < 3:
        pass
    assert slept == [] and rounds == [["a", "b", "c"]]  # no round was open: it waited on its socket
    send("a", 1, 0.25)
    worker.work(False)  # "a" opens a round that waits for "b" and "c"
    assert len(rounds) == 1
    send("b", 1, 0.25)
    send("c", 1, 0.25)
    worker.work(False)
    # One turn: it slept the round's whole 40 ms (not woken by "b" or "c"), took both, and stepped all three.
    assert slept == [0.04]
    assert rounds[1:] == [["a", "b", "c"]]
    assert [r.t for r in scores.records if r.stream == "c"] == [0.0, 0.25]
