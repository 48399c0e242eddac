"""Durable state in the temporal stage: snapshots taken on a schedule (clock passed in) and written on a
thread, newest per stream; a restarted worker continuing its predecessor's streams; a live stream of a
new run continuing the previous run's; refusals counted; the detector's open actions and times aligned."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import zmq

from engines.spec import STATS_DIM
from engines.temporal_head import load_head
from pipeline.config import EventsConfig, OutputsConfig, TemporalConfig
from pipeline.events import ActionEventDetector, HysteresisConfig
from pipeline.outputs.sinks import SinkFanOut
from pipeline.stages.settings import TemporalSettings
from pipeline.stages.temporal.reorder import ReorderBuffer
from pipeline.stages.temporal.restoring import StreamRestorer, gap_line, restart_shift
from pipeline.stages.temporal.snapshots import SnapshotWriter, SnapshotWriterFailed, StreamSnapshots
from pipeline.stages.temporal.state_table import StreamStateTable
from pipeline.stages.temporal.worker import TemporalWorker
from pipeline.state.config import StateConfig
from pipeline.state.snapshot import RowState, StreamSnapshot
from pipeline.state.snapshot_file import SnapshotWriteError
from pipeline.state.store import DirectoryStore
from pipeline.transport.control import ResumeStream
from pipeline.transport.messages import EmbeddingHeader, Flags, encode_embedding
from tests.support.fakes import Collect, ManualClock
from tests.support.runs import MODEL

HYSTERESIS = HysteresisConfig(on_threshold=0.5, off_threshold=0.3, min_on_steps=2, min_off_steps=2, warmup_steps=2)


def _snapshot(stream="cam", seq=3, t=0.75, wall=1000.0, track=None) -> StreamSnapshot:
    row = RowState(np.zeros((1, 4), np.float32), np.zeros(3, np.float32), True)
    return StreamSnapshot(stream=stream, generation=0, seq=seq, t=t, wall_time=wall, head_id="h", backbone_id="b",
                          row=row, track=track or {})


# -- the detector's alignment ------------------------------------------------------------------

def test_align_open_actions_closes_quietly_what_was_ended_and_opens_what_was_started():
    detector = ActionEventDetector(("background", "enter", "exit"), HYSTERESIS)
    detector.update("cam", 0.0, np.array([0.1, 0.1, 0.1]), 0.0)
    detector._streams["cam"].classes[1].active = True  # the snapshot says enter is open
    detector.align_open_actions("cam", {"exit": 0.8})  # the events sent since: enter ended, exit started
    assert detector.open_actions("cam") == {"exit": 0.8}
    # Neither alignment is an event; exit ends as usual, with the confidence it was opened with in its mean.
    events = [detector.update("cam", t, np.array([0.9, 0.1, 0.1]), t) for t in (0.25, 0.5)]
    assert [(e.action, e.kind) for step in events for e in step] == [("exit", "end")]


def test_shift_times_moves_every_time_of_a_track_and_keeps_no_step_as_no_step():
    detector = ActionEventDetector(("background", "enter"), HYSTERESIS)
    detector.import_track("fresh", detector.export_track("fresh"))
    detector.shift_times("fresh", -5.0)
    assert detector.export_track("fresh")["last_t"] is None
    for t in (30.0, 30.25, 30.5):
        detector.update("cam", t, np.array([0.1, 0.9]), t)
    detector.shift_times("cam", -29.0)
    track = detector.export_track("cam")
    assert track["last_t"] == 1.5 and track["classes"]["enter"]["onset_t"] == 1.5
    assert detector.update("cam", 1.75, np.array([0.1, 0.9]), 1.75)[0].t == 1.5  # dated in the new time


def test_gap_line_and_restart_shift():
    snap = _snapshot(seq=3, t=0.75, wall=1000.0)
    assert gap_line(snap, 9, 2.25).endswith("5 step(s), 1.50 s of stream time, lost")
    assert restart_shift(snap, 0.5, now_wall=1004.0) == 0.5 - 4.0 - 0.75
    assert restart_shift(snap, 0.5, now_wall=990.0) == 0.5 - 0.75  # a clock behind: no age, never later than t


# -- the writer and the schedule ---------------------------------------------------------------

class GatedStore:
    """A store whose saves wait for ``gate``: a disk that has fallen behind."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.gate = threading.Event()
        self.saved: list[tuple[str, int]] = []
        self.removed: list[str] = []
        self.fail = fail

    def save(self, snapshot, fsync=None):
        self.gate.wait(5)
        if self.fail:
            raise self.fail
        self.saved.append((snapshot.stream, snapshot.seq))

    def remove(self, stream):
        self.removed.append(stream)
        return True


def test_a_writer_that_falls_behind_keeps_only_the_newest_snapshot_of_each_stream():
    store = GatedStore()
    writer = SnapshotWriter(store)
    writer.put([_snapshot("a", 1)])
    while not writer._busy:  # the writer holds a's seq 1, waiting on the disk
        threading.Event().wait(0.001)
    writer.put([_snapshot("a", 2), _snapshot("b", 1)])
    writer.put([_snapshot("a", 3)])
    writer.forget("b")
    store.gate.set()
    writer.close()
    assert store.saved == [("a", 1), ("a", 3)] and store.removed == ["b"]


def test_a_failed_write_is_counted_and_said_once_per_stream_until_it_succeeds_again(caplog):
    store = GatedStore(fail=SnapshotWriteError("/x/a.safetensors", "cannot be written: disk full"))
    store.gate.set()
    writer = SnapshotWriter(store)
    with caplog.at_level(logging.INFO):
        for seq in range(3):
            writer.put([_snapshot("a", seq)])
            assert writer.wait_idle(5)
        store.fail = None
        writer.put([_snapshot("a", 9)])
        writer.close()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("cannot be written" in line for line in lines) == 1, lines
    assert any("written again" in line for line in lines) and store.saved == [("a", 9)]


def test_an_unexpected_error_in_the_writer_is_raised_on_the_temporal_thread():
    store = GatedStore(fail=RuntimeError("a bug"))
    store.gate.set()
    writer = SnapshotWriter(store)
    writer.put([_snapshot("a", 1)])
    with pytest.raises(SnapshotWriterFailed, match="a bug"):
        writer.close()


class Position:
    def __init__(self, generation, last_seq, last_t):
        self.generation, self.last_seq, self.last_t = generation, last_seq, last_t


@pytest.fixture(scope="module")
def head():
    return load_head(MODEL)[0]


def test_snapshots_are_taken_at_most_every_interval_and_only_of_streams_that_stepped(head, tmp_path):
    from pipeline.stages.temporal.state_table import StepInput

    table = StreamStateTable(head, 4, 30.0)
    detector = ActionEventDetector(head.config.classes, HYSTERESIS)
    e, s = head.config.backbone.embedding_dim, head.config.backbone.stats_dim
    table.step([StepInput(n, 0, 0.0, np.ones(e, np.float32), np.ones(s, np.float32), start=True)
                for n in ("a", "b")], 0.0)
    store = GatedStore()
    store.gate.set()
    snaps = StreamSnapshots(SnapshotWriter(store), "h", "b", interval_s=1.0, now=100.0, wall_clock=lambda: 5.0)
    where = {"a": Position(2, 7, 1.75), "b": Position(0, 3, 0.75)}.get
    snaps.stepped("a")
    assert snaps.tick(100.5, table, detector, where) == 0  # not yet
    assert snaps.tick(101.0, table, detector, where) == 1  # a only: b did not step
    assert snaps.tick(101.5, table, detector, where) == 0
    snaps.stepped("a")
    snaps.stepped("b")
    assert snaps.tick(101.9, table, detector, where) == 0  # the interval counts from the last round
    snaps.close(table, detector, where)  # a drained stop: what stepped since is taken and written
    # The first round's a may have been replaced, unwritten, by the newer one: the newest of each is written.
    assert store.saved[-2:] == [("a", 7), ("b", 3)]


# -- the worker: a restart after a crash, a new run --------------------------------------------



@pytest.fixture()
def rig(head, tmp_path):
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind("inproc://state-wiring")
    push = context.socket(zmq.PUSH)
    push.connect("inproc://state-wiring")
    store = DirectoryStore(tmp_path / "state", fsync=False)
    wall = ManualClock()

    def make(state=None, **settings):
        events, scores = Collect(), Collect()
        settings = TemporalSettings(stage="temporal", control_endpoint="", parent_pid=0, run_dir="",
                                    model_path=str(MODEL), temporal=TemporalConfig(max_batch_size=8),
                                    events=EventsConfig(), in_endpoint="inproc://state-wiring",
                                    state=state or StateConfig(), **{"outputs": OutputsConfig(), **settings})
        table = StreamStateTable(head, 8, 30.0)
        snapshots = StreamSnapshots(SnapshotWriter(store), "head-1", "backbone-1", 1.0, 0.0, wall_clock=wall)
        restorer = StreamRestorer(store, "head-1", "backbone-1", settings.state.max_age_s, table.row_shape,
                                  wall_clock=wall)
        worker = TemporalWorker(settings, table, ReorderBuffer(64, 60.0, first_seq=0),
                                ActionEventDetector(head.config.classes, EventsConfig().hysteresis()), pull,
                                SinkFanOut([events]), SinkFanOut([scores]), head.config.classes, clock=ManualClock(),
                                wall_clock=wall, live_reorder=ReorderBuffer(8, 2.0, first_seq=0),
                                snapshots=snapshots, restorer=restorer)
        return worker, events, scores

    rng = np.random.default_rng(3)
    frames = [(rng.normal(size=1280).astype(np.float32), rng.uniform(size=STATS_DIM).astype(np.float32))
              for _ in range(16)]

    def send(stream, seq, t, generation=0, flags=0, reason="", live=False, frame=None):
        header = EmbeddingHeader(stream, seq, t, 0.0, flags, 0.0, 1280, STATS_DIM, generation=generation,
                                 reason=reason, live=live)
        embedding, stats = frames[seq if frame is None else frame]
        push.send(encode_embedding(header, embedding, stats))

    yield make, send, store, wall
    push.close(linger=0)
    pull.close(linger=0)
    context.term()


def _pump(worker: TemporalWorker) -> None:
    while worker._receive(0.05):
        pass
    while worker._step_round():
        pass


def _predecessor_snapshotted_at_seq_4(make, send):
    """A worker that steps "cam" (generation 2) through seqs 0..4, has its snapshot written, steps 5..7
    and is then given up for dead; its scores sink (every step's scores, as if it never stopped)."""
    first, _, reference = make()
    for seq in range(5):
        send("cam", seq, seq * 0.25, generation=2, flags=Flags.START if seq == 0 else 0, reason="open" if seq == 0 else "")
    _pump(first)
    first._snapshots.take(["cam"], first._table, first._detector, first._position_of)
    first._snapshots._writer.close()
    for seq in range(5, 8):
        send("cam", seq, seq * 0.25, generation=2)
    _pump(first)
    return reference


def test_a_restarted_worker_continues_its_predecessors_streams_and_leaves_their_actions_open(rig):
    make, send, store, wall = rig
    # The predecessor's last snapshot is after seq 4; then it steps 5..7 and dies with "enter" open.
    reference = _predecessor_snapshotted_at_seq_4(make, send)
    assert store.load("cam").seq == 4
    wall.now += 2.0
    worker, events, scores = make(restarted=True, known_generations={"cam": 2},
                                  orphaned_actions={"cam": {"t": 1.75, "actions": {"enter": 0.8}, "generation": 2}})
    worker.close_orphaned_actions(worker.restore_after_crash())
    assert events.records == []  # not closed: the stream continues with it open
    assert set(worker.heartbeat().streams["cam"]["actions"]) == {"enter"}
    for seq in range(5, 8):  # in flight when the predecessor died: they reach the successor
        send("cam", seq, seq * 0.25, generation=2)
    _pump(worker)
    assert [r.t for r in scores.records] == [1.25, 1.5, 1.75]
    # Continued from seq 4: bitwise the scores of the predecessor, which never stopped.
    for got, want in zip(scores.records, reference.records[5:]):
        assert got.scores == want.scores
    assert worker._table.implicit_starts == 0


def test_a_snapshot_too_old_or_of_another_generation_is_refused_and_the_actions_closed(rig, caplog):
    make, send, store, wall = rig
    first, _, _ = make()
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    send("old", 0, 0.0, flags=Flags.START, reason="open")
    _pump(first)
    first._snapshots.take(["cam", "old"], first._table, first._detector, lambda s: Position(0, 0, 0.0))
    first._snapshots._writer.close()
    wall.now += 5.0
    worker, events, _ = make(state=StateConfig(max_age_s=4.0, snapshot_interval_s=1.0), restarted=True,
                             known_generations={"cam": 1, "old": 0},
                             orphaned_actions={"cam": {"t": 0.0, "actions": {"enter": 0.8}, "generation": 1}})
    with caplog.at_level(logging.WARNING):
        worker.close_orphaned_actions(worker.restore_after_crash())
    assert [(e.stream, e.reason) for e in events.records] == [("cam", "restart")]
    lines = [r.getMessage() for r in caplog.records if "not restored" in r.getMessage()]
    assert len(lines) == 2 and "(too_old)" in lines[0] and "(too_old)" in lines[1], lines


def test_a_rewound_replay_drops_its_old_frames_continues_without_reset_and_outputs_only_what_was_not_written(
        rig, tmp_path):
    make, send, store, wall = rig
    reference = _predecessor_snapshotted_at_seq_4(make, send)
    # The predecessor wrote the score lines of steps 5 and 6 after its snapshot, and died before step 7's.
    scores_file = tmp_path / "s.jsonl"
    scores_file.write_text("".join(r.to_json() + "\n" for r in reference.records[:7]))
    wall.now += 2.0
    worker, events, scores = make(restarted=True, known_generations={"cam": 2}, rewind=("cam",),
                                  outputs=OutputsConfig(scores_jsonl=scores_file))
    reported = []
    worker._report = reported.append
    worker.close_orphaned_actions(worker.restore_after_crash())
    assert [(m.stream, m.generation, m.t) for m in worker._rewinds_to_ask] == [("cam", 2, 1.0)]
    for seq in range(5, 8):  # the old generation's frames after the snapshot: read again by the rewind
        send("cam", seq, seq * 0.25, generation=2)
    _pump(worker)
    assert scores.records == [] and worker.tallies["cam"].dropped == {"stage_crash": 3}
    for n, seq in enumerate(range(5, 8)):  # the rewind: a new generation, read again after t=1.0
        send("cam", n, seq * 0.25, generation=3, flags=Flags.START if n == 0 else 0, reason="rewind" if n == 0 else "",
             frame=seq)
    _pump(worker)
    # Steps 5 and 6 stepped quietly (written already), step 7 output: bitwise the predecessor's, no reset.
    assert [r.t for r in scores.records] == [1.75]
    assert scores.records[0].scores == reference.records[7].scores
    assert worker._table.implicit_starts == 0 and worker.tallies["cam"].processed == 3


def test_a_live_stream_of_a_new_run_continues_the_previous_runs_snapshot_and_restore_off_starts_fresh(rig):
    make, send, store, wall = rig
    first, _, _ = make()
    for seq in range(4):
        send("yard", seq, 40.0 + seq * 0.25, flags=Flags.START if seq == 0 else 0, reason="open", live=True)
    send("yard", 4, 41.0, flags=Flags.END, reason="stopped", live=True)  # a drained stop
    _pump(first)
    first._snapshots.close(first._table, first._detector, first._position_of)
    assert store.load("yard").seq == 4 and store.load("yard").t == 41.0
    wall.now += 3.0
    worker, _, scores = make()
    send("yard", 0, 0.5, flags=Flags.START, reason="open", live=True, frame=5)
    _pump(worker)
    assert worker._table.row_of("yard") is not None and worker._table.implicit_starts == 0
    assert worker._detector.export_track("yard")["last_t"] == 0.5  # moved to this run's clock
    assert worker._detector.export_track("yard")["steps_since_reset"] > 5  # no warm-up
    # The same frame in a run with restore off: a new sequence, so other scores.
    fresh, _, fresh_scores = make(state=StateConfig(restore=False))
    send("yard", 0, 0.5, flags=Flags.START, reason="open", live=True, frame=5)
    _pump(fresh)
    assert fresh._detector.export_track("yard")["steps_since_reset"] == 1
    assert fresh_scores.records[0].scores != scores.records[0].scores


def test_a_corrupt_snapshot_is_refused_naming_the_file_and_the_stream_starts_fresh(rig, caplog):
    make, send, store, wall = rig
    store.path_of("yard").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    worker, _, scores = make()
    with caplog.at_level(logging.WARNING):
        send("yard", 0, 0.5, flags=Flags.START, reason="open", live=True)
        _pump(worker)
    lines = [r.getMessage() for r in caplog.records if "not restored" in r.getMessage()]
    assert len(lines) == 1 and "(corrupt)" in lines[0] and str(store.path_of("yard")) in lines[0], lines
    assert len(scores.records) == 1 and worker._detector.export_track("yard")["steps_since_reset"] == 1
    # A new sequence replaces the stream's snapshot at its first step, not a second later.
    assert worker._snapshots._writer.wait_idle(5) and store.load("yard").seq == 0


def test_other_ends_remove_the_streams_snapshot(rig):
    make, send, store, _ = rig
    worker, _, _ = make()
    send("cam", 0, 0.0, flags=Flags.START, reason="open")
    _pump(worker)
    worker._snapshots.take(["cam"], worker._table, worker._detector, worker._position_of)
    assert worker._snapshots._writer.wait_idle(5) and store.streams() == ["cam"]
    send("cam", 1, 0.25, flags=Flags.END, reason="end_of_stream")
    _pump(worker)
    worker._snapshots.close(worker._table, worker._detector, worker._position_of)
    assert store.streams() == []


# -- cluster mode: a stream moved out of one worker, resumed by another --------------------------

def test_a_moved_stream_keeps_its_actions_open_and_another_worker_continues_it_bitwise(rig):
    make, send, store, wall = rig
    reference_worker, _, reference = make()  # the stream stepped by one worker from start to end
    for seq in range(8):
        send("ref", seq, seq * 0.25, flags=Flags.START if seq == 0 else 0, reason="open" if seq == 0 else "")
    _pump(reference_worker)
    first, first_events, _ = make()
    said = []
    first._report = said.append
    for seq in range(5):
        send("cam", seq, seq * 0.25, flags=Flags.START if seq == 0 else 0, reason="open" if seq == 0 else "")
    send("cam", 5, 1.25, flags=Flags.END, reason="moved")  # its last step, and the move's END
    _pump(first)
    moved = [m for m in said if type(m).__name__ == "StreamMovedOut"]
    assert [(m.stream, m.snapshotted, m.seq, m.t) for m in moved] == [("cam", True, 5, 1.25)]
    assert store.load("cam").seq == 5  # written before the supervisor heard of it
    assert store.load("cam").event_numbering == (first.epoch, 0, 5)
    assert not any(e.reason == "moved" for e in first_events.records)  # a move ends no action
    assert "cam" not in first._detector.streams and first._table.row_of("cam") is None
    wall.now += 1.0
    second, _, scores = make()
    answer = second.resume_stream(ResumeStream("cam", 7, "move", {}, 1.25))
    assert (answer.restored, answer.t, answer.generation) == (True, 1.25, 7)
    for n, seq in enumerate(range(6, 8)):  # the next node reads on after t=1.25: START of its own generation
        send("cam", n, seq * 0.25, generation=7, flags=Flags.START if n == 0 else 0, reason="move" if n == 0 else "",
             frame=seq)
    _pump(second)
    assert [r.t for r in scores.records] == [1.5, 1.75]
    assert [r.scores for r in scores.records] == [r.scores for r in reference.records[6:8]]  # no reset between
    assert second._table.implicit_starts == 0
    # Its events go on being named as the first worker named them: an event decided again keeps its id.
    second._snapshots.take(["cam"], second._table, second._detector, second._position_of)
    assert second._snapshots._writer.wait_idle(5) and store.load("cam").event_numbering == (first.epoch, 0, 7)
    assert second._positions["cam"].event_name(second.epoch, 7, 1) == (first.epoch, 0, 7)


def test_a_failover_without_a_usable_snapshot_ends_the_lost_nodes_open_actions_with_failover(rig):
    make, send, store, wall = rig
    worker, events, _ = make()
    answer = worker.resume_stream(ResumeStream("gate", 3, "failover", {"enter": 0.7}, 12.5))
    assert answer.restored is False
    assert [(e.stream, e.action, e.kind, e.t, e.reason) for e in events.records] == [
        ("gate", "enter", "end", 12.5, "failover")]
    assert events.records[0].id.split(":")[2:4] == ["3", "-1"]  # numbered in the stream's new generation


# -- settings ----------------------------------------------------------------------------------

def test_no_restore_on_the_command_line_turns_state_restore_off():
    from pipeline.cli import _parser, build_config

    assert build_config(_parser().parse_args(["--source", "a.mp4", "--no-restore"])).state.restore is False
    assert build_config(_parser().parse_args(["--source", "a.mp4"])).state.restore is True


def test_snapshots_go_to_the_run_folder_unsynced_or_to_state_dir_fsynced(tmp_path):
    from pipeline.supervision.launch import state_folder
    from pipeline.supervision.run_folder import RunFolder
    from tests.support.runs import config

    with RunFolder(tmp_path) as folder:
        assert state_folder(config(sources=[{"uri": "a.mp4"}]), folder) == {
            "state_folder": str(folder.path / "state"), "state_fsync": False}
        kept = config(sources=[{"uri": "a.mp4"}], state={"dir": str(tmp_path / "keep")})
        assert state_folder(kept, folder) == {"state_folder": str(tmp_path / "keep"), "state_fsync": True}
