"""The temporal stage's reorder window: strict seq order per stream, gaps skipped after a timeout or overflow."""

from __future__ import annotations

import pytest

from pipeline.stages.temporal.reorder import Delivered, Gap, Rejected, ReorderBuffer, ReorderConfigError


def _seqs(released) -> list[int]:
    return [r.seq for r in released if isinstance(r, Delivered)]


def test_in_order_frames_pass_straight_through():
    buf: ReorderBuffer[str] = ReorderBuffer(window=4, timeout_s=1.0)
    for seq in range(100, 105):
        assert buf.push("cam", seq, f"f{seq}", now=0.0) == [Delivered("cam", seq, f"f{seq}")]
    assert buf.held() == 0
    assert buf.expected_seq("cam") == 105
    assert buf.next_due_in(0.0) is None


def test_out_of_order_frames_are_held_then_released_in_order():
    buf: ReorderBuffer[int] = ReorderBuffer(window=4, timeout_s=1.0)
    assert _seqs(buf.push("cam", 0, 0, now=0.0)) == [0]
    assert buf.push("cam", 3, 3, now=0.1) == []
    assert buf.push("cam", 2, 2, now=0.2) == []
    assert buf.held("cam") == 2
    released = buf.push("cam", 1, 1, now=0.3)
    assert released == [Delivered("cam", 1, 1), Delivered("cam", 2, 2), Delivered("cam", 3, 3)]
    assert buf.held() == 0
    assert buf.expire(100.0) == []


def test_a_gap_is_skipped_after_the_timeout_counted_from_the_first_frame_behind_it():
    buf: ReorderBuffer[int] = ReorderBuffer(window=8, timeout_s=0.5)
    buf.push("cam", 10, 10, now=0.0)
    # 11 and 12 are lost upstream.
    assert buf.push("cam", 13, 13, now=1.0) == []
    assert buf.push("cam", 14, 14, now=1.2) == []
    assert buf.next_due_in(1.2) == pytest.approx(0.3)
    assert buf.expire(1.49) == []
    released = buf.expire(1.5)
    assert released == [Gap("cam", 11, 2, "timeout"), Delivered("cam", 13, 13), Delivered("cam", 14, 14)]
    assert buf.expected_seq("cam") == 15
    assert buf.next_due_in(1.5) is None
    # A lost frame that turns up after its gap was skipped is rejected, not delivered, and
    # marked as already counted in its gap (so the caller counts it once).
    assert buf.push("cam", 12, 12, now=1.6) == [Rejected("cam", 12, 12, "skipped")]
    assert buf.push("cam", 13, 13, now=1.7) == [Rejected("cam", 13, 13, "late")]


def test_a_second_gap_behind_held_frames_that_are_already_overdue_is_skipped_too():
    buf: ReorderBuffer[int] = ReorderBuffer(window=8, timeout_s=0.5)
    buf.push("cam", 0, 0, now=0.0)
    buf.push("cam", 2, 2, now=0.1)
    buf.push("cam", 4, 4, now=0.1)
    released = buf.expire(0.6)
    assert released == [
        Gap("cam", 1, 1, "timeout"),
        Delivered("cam", 2, 2),
        Gap("cam", 3, 1, "timeout"),
        Delivered("cam", 4, 4),
    ]


def test_the_gap_left_after_a_partial_fill_keeps_the_age_of_the_frames_behind_it():
    buf: ReorderBuffer[int] = ReorderBuffer(window=8, timeout_s=1.0)
    buf.push("cam", 0, 0, now=0.0)
    buf.push("cam", 3, 3, now=0.2)
    assert _seqs(buf.push("cam", 1, 1, now=0.9)) == [1]
    # Seq 2 has been overdue since seq 3 arrived at 0.2.
    assert buf.next_due_in(0.9) == pytest.approx(0.3)
    assert buf.expire(1.2) == [Gap("cam", 2, 1, "timeout"), Delivered("cam", 3, 3)]


def test_overflowing_the_window_skips_the_gap_without_waiting():
    buf: ReorderBuffer[int] = ReorderBuffer(window=2, timeout_s=60.0)
    buf.push("cam", 0, 0, now=0.0)
    assert buf.push("cam", 2, 2, now=0.0) == []
    assert buf.push("cam", 3, 3, now=0.0) == []
    released = buf.push("cam", 5, 5, now=0.0)
    assert released == [Gap("cam", 1, 1, "window"), Delivered("cam", 2, 2), Delivered("cam", 3, 3)]
    assert buf.held("cam") == 1
    assert buf.expected_seq("cam") == 4


def test_window_zero_never_holds_a_frame():
    buf: ReorderBuffer[int] = ReorderBuffer(window=0, timeout_s=60.0)
    buf.push("cam", 0, 0, now=0.0)
    assert buf.push("cam", 3, 3, now=0.0) == [Gap("cam", 1, 2, "window"), Delivered("cam", 3, 3)]


def test_duplicates_and_late_frames_are_rejected():
    buf: ReorderBuffer[str] = ReorderBuffer(window=4, timeout_s=1.0)
    buf.push("cam", 0, "a", now=0.0)
    assert buf.push("cam", 0, "again", now=0.1) == [Rejected("cam", 0, "again", "late")]
    buf.push("cam", 2, "first", now=0.1)
    assert buf.push("cam", 2, "second", now=0.2) == [Rejected("cam", 2, "second", "duplicate")]
    # The first copy is the one delivered.
    assert buf.push("cam", 1, "b", now=0.3) == [Delivered("cam", 1, "b"), Delivered("cam", 2, "first")]


def test_streams_are_independent():
    buf: ReorderBuffer[str] = ReorderBuffer(window=4, timeout_s=1.0)
    buf.push("a", 0, "a0", now=0.0)
    buf.push("b", 50, "b50", now=0.0)
    assert buf.push("a", 2, "a2", now=0.1) == []
    # Stream b is not held up by a's gap.
    assert buf.push("b", 51, "b51", now=0.2) == [Delivered("b", 51, "b51")]
    assert buf.held("a") == 1 and buf.held("b") == 0
    assert buf.expire(1.1) == [Gap("a", 1, 1, "timeout"), Delivered("a", 2, "a2")]
    assert buf.expected_seq("b") == 52


def test_the_first_frame_seen_sets_the_expected_seq():
    buf: ReorderBuffer[int] = ReorderBuffer(window=4, timeout_s=1.0)
    assert _seqs(buf.push("cam", 7, 7, now=0.0)) == [7]
    assert buf.push("cam", 6, 6, now=0.0) == [Rejected("cam", 6, 6, "late")]


def test_end_forgets_the_stream_and_returns_what_it_held():
    buf: ReorderBuffer[int] = ReorderBuffer(window=4, timeout_s=1.0)
    buf.push("cam", 0, 0, now=0.0)
    buf.push("cam", 3, 3, now=0.0)
    assert buf.end("cam") == [Rejected("cam", 3, 3, "stream_ended")]
    assert buf.streams == ()
    assert buf.end("cam") == []
    # A new frame after the end starts the stream afresh.
    assert _seqs(buf.push("cam", 40, 40, now=1.0)) == [40]


def test_start_resets_the_expected_seq():
    buf: ReorderBuffer[int] = ReorderBuffer(window=4, timeout_s=1.0)
    buf.push("cam", 0, 0, now=0.0)
    buf.push("cam", 2, 2, now=0.0)
    buf.push("cam", 9, 9, now=0.0)
    released = buf.start("cam", 5)
    assert released == [Rejected("cam", 2, 2, "late")]
    assert buf.expected_seq("cam") == 5
    assert _seqs(buf.push("cam", 5, 5, now=0.1)) == [5]
    assert buf.start("new", 3) == []
    assert _seqs(buf.push("new", 3, 3, now=0.1)) == [3]


@pytest.mark.parametrize("window, timeout", [(-1, 1.0), (1.5, 1.0), (True, 1.0), (4, -1.0), (4, float("nan"))])
def test_parameters_are_validated(window, timeout):
    with pytest.raises(ReorderConfigError):
        ReorderBuffer(window=window, timeout_s=timeout)


def test_with_first_seq_zero_a_swapped_first_pair_is_not_lost():
    from pipeline.stages.temporal.reorder import Delivered, ReorderBuffer

    buf = ReorderBuffer(window=8, timeout_s=1.0, first_seq=0)
    assert buf.push("cam", 1, "b", now=0.0) == []
    released = buf.push("cam", 0, "a", now=0.01)
    assert [(r.seq, r.item) for r in released if isinstance(r, Delivered)] == [(0, "a"), (1, "b")]


def test_flush_delivers_what_is_held_in_order_and_forgets_the_stream():
    buf: ReorderBuffer[int] = ReorderBuffer(window=8, timeout_s=60.0, first_seq=0)
    buf.push("cam", 0, 0, now=0.0)
    buf.push("cam", 3, 3, now=0.0)
    buf.push("cam", 2, 2, now=0.0)
    buf.push("cam", 6, 6, now=0.0)
    assert buf.flush("cam") == [
        Gap("cam", 1, 1, "flush"), Delivered("cam", 2, 2), Delivered("cam", 3, 3), Gap("cam", 4, 2, "flush"),
        Delivered("cam", 6, 6),
    ]
    assert buf.streams == () and buf.flush("cam") == []


def test_skip_all_gaps_releases_every_stream_without_waiting_for_the_timeout():
    buf: ReorderBuffer[int] = ReorderBuffer(window=8, timeout_s=60.0, first_seq=0)
    buf.push("a", 1, 1, now=0.0)
    buf.push("b", 0, 0, now=0.0)
    buf.push("b", 2, 2, now=0.0)
    assert buf.skip_all_gaps() == [Gap("a", 0, 1, "lost"), Delivered("a", 1, 1), Gap("b", 1, 1, "lost"), Delivered("b", 2, 2)]
    assert buf.held() == 0
    assert buf.push("b", 1, 1, now=0.1) == [Rejected("b", 1, 1, "skipped")]


def test_give_up_before_skips_only_the_gaps_below_that_seq():
    buf: ReorderBuffer[int] = ReorderBuffer(window=8, timeout_s=60.0, first_seq=0)
    buf.push("cam", 0, 0, now=0.0)
    buf.push("cam", 3, 3, now=0.0)  # 1 and 2 died with an embed worker
    buf.push("cam", 5, 5, now=0.0)  # 4 is still on its way from another one
    assert buf.push("b", 1, 1, now=0.0) == []
    assert buf.give_up_before("cam", 4) == [Gap("cam", 1, 2, "lost"), Delivered("cam", 3, 3)]
    assert buf.expected_seq("cam") == 4 and buf.held("cam") == 1
    assert _seqs(buf.push("cam", 4, 4, now=0.1)) == [4, 5]
    assert buf.held("b") == 1  # another stream's gap is not its business
    # Nothing missing below: nothing to give up; an unknown stream: nothing either.
    assert buf.give_up_before("cam", 6) == [] and buf.give_up_before("nobody", 9) == []
    assert buf.push("cam", 2, 2, now=0.2) == [Rejected("cam", 2, 2, "skipped")]
    # Missing frames with nothing held behind them yet are given up too.
    assert buf.give_up_before("cam", 9) == [Gap("cam", 6, 3, "lost")]
    assert _seqs(buf.push("cam", 9, 9, now=0.3)) == [9]
