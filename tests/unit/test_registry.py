"""StreamTable: which streams exist, which capture worker serves each, generations and reported state."""

from __future__ import annotations

import copy

import pytest

from pipeline.config import SourceConfig
from pipeline.supervision.registry import (
    CapacityError,
    DuplicateStreamError,
    StreamRequestError,
    StreamTable,
    UnknownStreamError,
)

WORKERS = ["capture-0", "capture-1"]


def src(uri: str = "a.mp4") -> SourceConfig:
    return SourceConfig(uri=uri)


def snapshot(table: StreamTable) -> tuple:
    return (copy.deepcopy(table._entries), dict(table._generations))


def test_add_creates_a_connecting_entry_of_generation_zero() -> None:
    table = StreamTable(capacity=4)
    source = src("a.mp4")

    entry = table.add("a", source, live=False, workers=WORKERS)

    assert (entry.name, entry.source, entry.live, entry.generation) == ("a", source, False, 0)
    assert entry.worker == "capture-0"
    assert (entry.state, entry.reason, entry.error) == ("connecting", "starting", "")
    assert (entry.delivered, entry.removing, entry.start_reason) == (False, False, "open")
    assert entry.last_t is None and entry.resume_after_t is None
    assert "a" in table
    assert table.get("a") is entry
    assert table.entries() == [entry]
    assert table.active() == [entry]


def test_add_assigns_the_least_loaded_worker() -> None:
    table = StreamTable(capacity=10)
    workers = ["w0", "w1", "w2"]

    assigned = [table.add(f"s{i}", src(), live=False, workers=workers).worker for i in range(7)]

    assert assigned == ["w0", "w1", "w2", "w0", "w1", "w2", "w0"]


def test_finished_streams_do_not_count_towards_a_workers_load() -> None:
    table = StreamTable(capacity=10)
    table.add("s0", src(), live=False, workers=WORKERS)  # capture-0
    table.add("s1", src(), live=False, workers=WORKERS)  # capture-1
    table.add("s2", src(), live=False, workers=WORKERS)  # capture-0
    table.record("s0", 0, "ended", "end_of_stream")
    table.record("s2", 0, "failed", "open_failed", "cannot decode")

    assert table.add("s3", src(), live=False, workers=WORKERS).worker == "capture-0"


def test_ties_go_to_the_first_worker_in_the_list() -> None:
    table = StreamTable(capacity=10)

    assert table.add("s0", src(), live=False, workers=["z", "a"]).worker == "z"


def test_a_duplicate_name_of_an_unfinished_stream_is_refused_and_nothing_changes() -> None:
    table = StreamTable(capacity=4)
    first = table.add("cam", src("a.mp4"), live=False, workers=WORKERS)
    before = snapshot(table)

    with pytest.raises(DuplicateStreamError, match="cam") as excinfo:
        table.add("cam", src("b.mp4"), live=False, workers=WORKERS)

    assert excinfo.value.code == "duplicate"
    assert isinstance(excinfo.value, StreamRequestError)
    assert isinstance(excinfo.value, ValueError)
    assert snapshot(table) == before
    assert table.get("cam") is first
    assert table.get("cam").source.uri == "a.mp4"


@pytest.mark.parametrize("state", ["connecting", "live", "reconnecting"])
def test_any_unfinished_state_blocks_a_duplicate(state: str) -> None:
    table = StreamTable(capacity=4)
    table.add("cam", src(), live=True, workers=WORKERS)
    table.record("cam", 0, state, "x")

    with pytest.raises(DuplicateStreamError):
        table.add("cam", src(), live=True, workers=WORKERS)


def test_adding_beyond_capacity_is_refused_and_nothing_changes() -> None:
    table = StreamTable(capacity=2)
    table.add("a", src(), live=False, workers=WORKERS)
    table.add("b", src(), live=False, workers=WORKERS)
    before = snapshot(table)

    with pytest.raises(CapacityError, match="2 streams") as excinfo:
        table.add("c", src(), live=False, workers=WORKERS)

    assert excinfo.value.code == "capacity"
    assert snapshot(table) == before
    assert "c" not in table


def test_capacity_counts_only_unfinished_streams() -> None:
    table = StreamTable(capacity=2)
    table.add("a", src(), live=False, workers=WORKERS)
    table.add("b", src(), live=False, workers=WORKERS)
    table.record("a", 0, "ended", "end_of_stream")

    entry = table.add("c", src(), live=False, workers=WORKERS)

    assert entry.name == "c"
    assert [e.name for e in table.active()] == ["b", "c"]
    assert len(table.entries()) == 3


def test_no_workers_is_refused_and_nothing_changes() -> None:
    table = StreamTable(capacity=2)
    before = snapshot(table)

    with pytest.raises(StreamRequestError) as excinfo:
        table.add("a", src(), live=False, workers=[])

    assert excinfo.value.code == "invalid"
    assert snapshot(table) == before


def test_a_finished_streams_name_can_be_added_again_with_a_higher_generation() -> None:
    table = StreamTable(capacity=4)
    table.add("cam", src("a.mp4"), live=False, workers=WORKERS)
    table.record("cam", 0, "failed", "open_failed", "missing")

    again = table.add("cam", src("b.mp4"), live=False, workers=WORKERS)

    assert again.generation == 1
    assert again.source.uri == "b.mp4"
    assert (again.state, again.error) == ("connecting", "")
    assert table.get("cam") is again


def test_generations_never_go_back_across_restarts_and_re_adds() -> None:
    table = StreamTable(capacity=4)
    table.add("cam", src(), live=True, workers=["w0"])
    table.reassign("w0")  # generation 1
    table.reassign("w0")  # generation 2
    table.mark_removing("cam")
    table.reassign("w0")  # ends it, generation 3

    again = table.add("cam", src(), live=True, workers=["w0"])

    assert again.generation == 4


def test_record_updates_the_current_generations_state() -> None:
    table = StreamTable(capacity=4)
    table.add("cam", src(), live=True, workers=WORKERS)

    entry = table.record("cam", 0, "reconnecting", "read_failed", "broken pipe")

    assert entry is table.get("cam")
    assert (entry.state, entry.reason, entry.error) == ("reconnecting", "read_failed", "broken pipe")


def test_record_clears_the_error_when_the_stream_is_live_again_and_keeps_it_otherwise() -> None:
    table = StreamTable(capacity=4)
    table.add("cam", src(), live=True, workers=WORKERS)
    table.record("cam", 0, "reconnecting", "read_failed", "broken pipe")

    table.record("cam", 0, "connecting", "retry")
    assert table.get("cam").error == "broken pipe"

    table.record("cam", 0, "live", "opened")
    assert table.get("cam").error == ""


def test_record_ignores_reports_of_a_superseded_generation() -> None:
    table = StreamTable(capacity=4)
    table.add("cam", src(), live=True, workers=["w0"])
    table.reassign("w0")  # generation 1
    before = snapshot(table)

    assert table.record("cam", 0, "failed", "open_failed", "old process") is None
    assert snapshot(table) == before
    assert table.get("cam").state == "connecting"


def test_record_of_an_unknown_stream_is_ignored() -> None:
    table = StreamTable(capacity=4)

    assert table.record("ghost", 0, "live", "opened") is None
    assert "ghost" not in table


def test_progress_records_the_last_time_of_the_current_generation() -> None:
    table = StreamTable(capacity=4)
    table.add("a", src(), live=False, workers=["w0"])

    table.progress("a", 0, 3.5, now=100.0)
    assert table.get("a").last_t == 3.5
    table.progress("a", 0, None, now=100.0)  # nothing new
    assert table.get("a").last_t == 3.5
    table.progress("a", 7, 99.0, now=100.0)  # a generation that is not current
    assert table.get("a").last_t == 3.5
    table.progress("ghost", 0, 1.0, now=100.0)  # unknown: ignored, no error
    assert "ghost" not in table


def test_reassign_starts_a_new_generation_of_the_workers_unfinished_streams() -> None:
    table = StreamTable(capacity=10)
    replay = table.add("replay", src("a.mp4"), live=False, workers=["w0"])
    other = table.add("other", src("b.mp4"), live=False, workers=["w1"])
    camera = table.add("camera", src("rtsp://10.0.0.7/s1"), live=True, workers=["w0"])
    done = table.add("done", src("c.mp4"), live=False, workers=["w0"])
    for e in (replay, camera, other):
        e.delivered = True
    table.record("replay", 0, "live", "opened")
    table.record("camera", 0, "reconnecting", "read_failed", "broken pipe")
    table.progress("replay", 0, 12.5, now=100.0)
    table.progress("camera", 0, 40.0, now=100.0)
    table.record("done", 0, "ended", "end_of_stream")

    moved = table.reassign("w0")

    assert moved == [replay, camera]
    assert (replay.generation, camera.generation) == (1, 1)
    for e in moved:
        assert e.delivered is False
        assert e.start_reason == "restart"
        assert (e.state, e.reason) == ("connecting", "capture_restart")
        assert e.worker == "w0"
    assert replay.resume_after_t == 12.5  # a replay picks up after what was sent
    assert camera.resume_after_t is None  # a live source just continues from now...
    # ...with its stream time carried on from the last step reported, plus the time since the report,
    # so a restarted capture process never sends a step earlier than one its predecessor sent.
    assert StreamTable.start_time(camera, now=103.5) == 43.5
    assert StreamTable.start_time(replay, now=103.5) is None
    # other workers' streams and finished streams are untouched
    assert (other.generation, other.delivered, other.start_reason) == (0, True, "open")
    assert (done.generation, done.state) == (0, "ended")


def test_reassign_ends_streams_that_were_being_removed() -> None:
    table = StreamTable(capacity=4)
    keep = table.add("keep", src(), live=True, workers=["w0"])
    gone = table.add("gone", src(), live=True, workers=["w0"])
    table.mark_removing("gone")

    moved = table.reassign("w0")

    assert moved == [keep]
    assert (gone.state, gone.reason) == ("ended", "removed")
    assert gone.finished
    assert gone.generation == 1  # its old process's late reports are ignored
    assert table.record("gone", 0, "live", "opened") is None
    assert gone.state == "ended"


def test_reassign_of_a_worker_with_no_streams_moves_nothing() -> None:
    table = StreamTable(capacity=4)
    entry = table.add("a", src(), live=False, workers=["w0"])

    assert table.reassign("w1") == []
    assert entry.generation == 0


def test_replay_without_progress_resumes_from_the_start() -> None:
    table = StreamTable(capacity=4)
    entry = table.add("a", src(), live=False, workers=["w0"])

    table.reassign("w0")

    assert entry.resume_after_t is None


def test_mark_removing_flags_an_unfinished_stream() -> None:
    table = StreamTable(capacity=4)
    table.add("a", src(), live=True, workers=["w0"])

    entry = table.mark_removing("a")

    assert entry.removing is True
    assert not entry.finished  # its worker ends it; the table only records the request


def test_mark_removing_an_unknown_stream_raises() -> None:
    table = StreamTable(capacity=4)

    with pytest.raises(UnknownStreamError, match="ghost") as excinfo:
        table.mark_removing("ghost")

    assert excinfo.value.code == "unknown"


@pytest.mark.parametrize("state", ["ended", "failed"])
def test_mark_removing_a_finished_stream_raises(state: str) -> None:
    table = StreamTable(capacity=4)
    table.add("a", src(), live=False, workers=["w0"])
    table.record("a", 0, state, "x")

    with pytest.raises(UnknownStreamError, match=state):
        table.mark_removing("a")
    assert table.get("a").removing is False


def test_get_of_an_unknown_stream_raises() -> None:
    with pytest.raises(UnknownStreamError, match="ghost"):
        StreamTable(capacity=1).get("ghost")


def test_served_by_lists_a_workers_unfinished_streams() -> None:
    table = StreamTable(capacity=10)
    table.add("a", src(), live=False, workers=["w0"])
    table.add("b", src(), live=False, workers=["w0"])
    table.add("c", src(), live=False, workers=["w1"])
    table.record("b", 0, "ended", "end_of_stream")

    assert [e.name for e in table.served_by("w0")] == ["a"]
    assert [e.name for e in table.served_by("w1")] == ["c"]


def test_finish_all_ends_unfinished_streams_and_keeps_finished_reasons() -> None:
    table = StreamTable(capacity=10)
    table.add("a", src(), live=True, workers=WORKERS)
    table.add("b", src(), live=False, workers=WORKERS)
    table.add("c", src(), live=False, workers=WORKERS)
    table.record("b", 0, "failed", "open_failed", "missing")
    table.record("c", 0, "ended", "end_of_stream")
    assert not table.all_finished

    table.finish_all("shutdown")

    assert table.all_finished
    assert table.active() == []
    assert [(e.name, e.state, e.reason) for e in table.entries()] == [
        ("a", "ended", "shutdown"),
        ("b", "failed", "open_failed"),
        ("c", "ended", "end_of_stream"),
    ]


def test_an_empty_table_is_all_finished() -> None:
    assert StreamTable(capacity=1).all_finished


def test_entry_repr_does_not_show_the_source_uri() -> None:
    table = StreamTable(capacity=1)
    entry = table.add("cam", src("rtsp://admin:secret@10.0.0.7/s1"), live=True, workers=["w0"])

    assert "secret" not in repr(entry)
    assert "10.0.0.7" not in repr(entry)


# -- cluster mode: streams resumed from another node, and moved out ------------------------------

def test_a_resumed_stream_waits_for_its_snapshot_then_reads_on_from_it() -> None:
    from pipeline.supervision.registry import ResumeRequest

    table = StreamTable(capacity=4)
    replay = table.add("clip", src(), False, WORKERS, ResumeRequest("failover", {"enter": 0.8}, last_t=9.5))
    live = table.add("cam", src("rtsp://cam/1"), True, WORKERS, ResumeRequest("move"))
    assert replay.awaiting_resume and live.awaiting_resume
    assert table.resumed("clip", replay.generation + 1, True, 7.25, 2.0) is None  # another generation: ignored
    assert table.resumed("clip", replay.generation, True, 7.25, 2.0) is replay
    assert (replay.awaiting_resume, replay.start_reason, replay.resume_after_t) == (False, "failover", 7.25)
    assert table.resumed("clip", replay.generation, True, 8.0, 0.0) is None  # answered once
    table.resumed("cam", live.generation, True, 30.0, 1.5)
    assert (live.start_reason, live.start_t, live.resume_after_t) == ("move", 31.5, None)  # time goes on


def test_a_replay_without_a_usable_snapshot_reads_on_after_its_last_step_on_the_other_node() -> None:
    from pipeline.supervision.registry import ResumeRequest

    table = StreamTable(capacity=4)
    entry = table.add("clip", src(), False, WORKERS, ResumeRequest("failover", last_t=9.5))
    table.resumed("clip", entry.generation, False, None, 0.0)
    assert (entry.start_reason, entry.resume_after_t) == ("failover", 9.5)
    with pytest.raises(StreamRequestError):
        ResumeRequest("restart")


def test_a_stream_moving_out_ends_moved_only_once_its_snapshot_is_reported() -> None:
    table = StreamTable(capacity=4)
    entry = table.add("clip", src(), False, WORKERS)
    table.moving("clip", now=5.0)
    table.record("clip", entry.generation, "ended", "removed")  # its capture's END comes first
    assert (entry.state, entry.reason, entry.moved) == ("ended", "moved", None)
    assert table.moved_out("clip", entry.generation + 1, True, 12, 3.0) is None
    table.moved_out("clip", entry.generation, True, 12, 3.0)
    assert entry.moved == {"snapshot": True, "seq": 12, "t": 3.0}
