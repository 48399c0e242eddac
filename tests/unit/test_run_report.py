"""The run's exit status and what it says was lost: one rule, however the run ended."""

from __future__ import annotations

import pytest

from pipeline.metrics import OutputCounters
from pipeline.supervision.report import RunSummary, exit_code, losses, output_rows


def row(state: str = "ended", overlay_dropped: dict | None = None) -> dict:
    return {"state": state, "overlay_dropped": overlay_dropped or {}}


def summary(*states: str, failure: str = "", interrupted: bool = False, lost: tuple[str, ...] = ()) -> RunSummary:
    return RunSummary(streams={f"s{i}": row(s) for i, s in enumerate(states)}, failure=failure,
                      interrupted=interrupted, losses=list(lost))


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_run_that_did_its_job_exits_0_finished_or_stopped(interrupted) -> None:
    assert exit_code(summary("ended", "ended", interrupted=interrupted)) == 0


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_failed_stream_is_exit_3_also_when_the_run_was_stopped_by_a_signal(interrupted) -> None:
    assert exit_code(summary("ended", "failed", interrupted=interrupted)) == 3


@pytest.mark.parametrize("interrupted", [False, True])
def test_an_output_or_overlay_loss_is_exit_3(interrupted) -> None:
    assert exit_code(summary("ended", interrupted=interrupted, lost=("output webhook lost 2 record(s)",))) == 3


def test_every_stream_failed_or_a_stage_failure_or_a_cut_drain_is_exit_1() -> None:
    assert exit_code(summary("failed", "failed")) == 1
    assert exit_code(summary("ended", failure="stage temporal failed: ...")) == 1
    cut = summary("ended", "failed", interrupted=True, lost=("x",),
                  failure="stopped without draining (a second stop request): frames in flight were lost")
    assert exit_code(cut) == 1


def test_a_run_with_no_streams_yet_exits_0() -> None:
    assert exit_code(summary()) == 0


def test_outputs_are_listed_with_what_they_delivered_failed_and_dropped() -> None:
    rows = output_rows({"webhook": OutputCounters(delivered=10, errors=1, dropped={"buffer_full": 3, "refused": 0}),
                        "mqtt": OutputCounters(delivered=4, spooled=2), "events_jsonl": OutputCounters()})
    assert rows == {"events_jsonl": {"delivered": 0, "errors": 0, "spooled": 0, "dropped": {}},
                    "mqtt": {"delivered": 4, "errors": 0, "spooled": 2, "dropped": {}},
                    "webhook": {"delivered": 10, "errors": 1, "spooled": 0, "dropped": {"buffer_full": 3}}}
    assert losses(rows, {}, overlay_video=False) == [  # spooled records wait for the next run: not lost
        "output webhook lost 4 record(s): 1 failed, 3 dropped (buffer_full=3)"]
    lines = losses(rows, {}, overlay_video=False)
    assert lines == ["output webhook lost 4 record(s): 1 failed, 3 dropped (buffer_full=3)"]


def test_overlay_drops_are_losses_of_the_overlay_video_but_not_of_the_live_page_alone() -> None:
    streams = {"a": row(overlay_dropped={"backpressure": 2}), "b": row(overlay_dropped={"stage_crash": 1})}
    assert losses({}, streams, overlay_video=True) == [
        "overlay video missed 3 scored step(s) (backpressure=2, stage_crash=1)"]
    assert losses({}, streams, overlay_video=False) == []
    assert losses({}, {"a": row()}, overlay_video=True) == []


@pytest.mark.parametrize(("restarts", "failure", "unexplained"), [
    ({}, "", True),  # nothing died and the drain was whole: a loss in transit, which must not pass as a clean run
    ({"embed:0": 1}, "", False),  # a stage died: its frames are the stage_crash drops, which need no more words
    ({}, "stopped without draining", False),  # the operator cut the drain short: the run already says so
])
def test_frames_sent_but_never_scored_are_stage_crash_drops_and_a_loss_when_no_stage_died(
        restarts, failure, unexplained) -> None:
    from pipeline.config import SourceConfig
    from pipeline.metrics import StreamCounters
    from pipeline.supervision.registry import StreamEntry
    from pipeline.supervision.report import summarise

    entry = StreamEntry("cam", SourceConfig(uri="cam.mp4"), live=False, generation=0, state="ended")
    counters = StreamCounters(captured=250, sent=40, processed=34)
    counters.dropped["sampling"] = 210
    run, lost = summarise([entry], {"cam": counters}, {}, [], restarts, False, failure, False)
    assert run.streams["cam"]["dropped"] == {"sampling": 210, "stage_crash": 6} and lost == {"cam": 6}
    assert [line for line in run.losses if "in transit" in line] == (
        ["stream cam: 6 frame(s) sent were neither scored nor dropped, and no stage died (lost in transit: please "
         "report it, with the log)"] if unexplained else [])
    assert run.exit_code == (1 if failure else 3 if unexplained else 0)
