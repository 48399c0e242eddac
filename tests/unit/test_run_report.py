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
