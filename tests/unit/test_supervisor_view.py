"""What other threads see of the supervisor's loop: answers from the status it last published, requests
carried out on the loop's thread, and the supervisor's own metrics. Injected clock; no pipeline run."""

from __future__ import annotations

import threading

import pytest

from pipeline.config import SourceConfig
from pipeline.metrics import StreamCounters
from pipeline.supervision.registry import StreamRequestError
from pipeline.supervision.view import LIVENESS_S, LoopRequests, RunStatus, SupervisorView


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


STAGES = (
    {"name": "temporal", "kind": "temporal", "pid": 1, "alive": True, "ready": True, "given_up": False, "restarts": 0},
    {"name": "embed:0", "kind": "embed", "pid": 2, "alive": True, "ready": True, "given_up": False, "restarts": 2},
    {"name": "embed:1", "kind": "embed", "pid": None, "alive": False, "ready": False, "given_up": True, "restarts": 6},
)
STREAMS = ({"name": "dock", "state": "live", "reason": "opened"},
           {"name": "yard", "state": "reconnecting", "reason": "flapping"})


def make_view(clock: Clock, counters: dict | None = None, added: list | None = None) -> SupervisorView:
    def add(source: SourceConfig) -> dict:
        added.append((threading.current_thread().name, source.uri))
        return {"name": source.name}

    def remove(name: str) -> dict:
        raise StreamRequestError(f"no stream named {name!r}")

    return SupervisorView(LoopRequests(timeout_s=5.0), add, remove, lambda: counters or {}, clock)


def test_before_the_loop_turns_the_pipeline_is_alive_but_starting():
    clock = Clock()
    view = make_view(clock)

    assert view.health()[0] is True
    assert view.readiness() == (False, {"status": "starting", "waiting_for": []})
    assert view.streams() == [] and view.stages() == []


def test_readiness_follows_the_published_status():
    clock = Clock()
    view = make_view(clock)
    view.publish(RunStatus(turned_at=clock.now, stages=STAGES[:2], waiting_for=("embed:0",)))
    assert view.readiness() == (False, {"status": "starting", "waiting_for": ["embed:0"]})

    view.publish(RunStatus(turned_at=clock.now, stages=STAGES[:2], announced=True))
    assert view.readiness() == (True, {"status": "ready", "stages": ["embed:0", "temporal"]})

    view.publish(RunStatus(turned_at=clock.now, stages=STAGES[:2], announced=True, waiting_for=("temporal",)))
    assert view.readiness()[1]["status"] == "degraded"  # it was up once: a stage is restarting

    view.publish(RunStatus(turned_at=clock.now, phase="draining_embed", running=False, stages=STAGES[:2]))
    assert view.readiness() == (False, {"status": "stopping", "phase": "draining_embed"})


def test_health_fails_once_the_loop_has_not_turned_for_a_while():
    clock = Clock()
    view = make_view(clock)
    view.publish(RunStatus(turned_at=clock.now))
    clock.now += LIVENESS_S - 0.01
    assert view.health()[0] is True
    clock.now += 0.02
    ok, body = view.health()
    assert not ok and body["status"] == "stalled" and body["loop_age_s"] == pytest.approx(LIVENESS_S + 0.01)


def test_stream_rows_carry_their_counters_and_zeros_before_a_first_frame():
    clock = Clock()
    view = make_view(clock, counters={"dock": StreamCounters(captured=40, sent=10, processed=9)})
    view.publish(RunStatus(turned_at=clock.now, streams=STREAMS))

    rows = {row["name"]: row for row in view.streams()}

    assert (rows["dock"]["state"], rows["dock"]["captured"], rows["dock"]["processed"]) == ("live", 40, 9)
    assert (rows["yard"]["captured"], rows["yard"]["dropped"]) == (0, {})


def test_requests_run_on_the_loops_thread_and_bring_back_its_answer_or_its_refusal():
    clock = Clock()
    added: list = []
    view = make_view(clock, added=added)
    answers: dict = {}

    def caller() -> None:
        answers["add"] = view.add_stream(SourceConfig(uri="rtsp://cam/1", name="gate"))
        try:
            view.remove_stream("ghost")
        except StreamRequestError as exc:
            answers["remove"] = str(exc)

    thread = threading.Thread(target=caller, name="http")
    thread.start()
    while thread.is_alive():  # the loop's turns
        view.requests.serve()
        thread.join(0.01)

    assert answers == {"add": {"name": "gate"}, "remove": "no stream named 'ghost'"}
    assert added == [(threading.current_thread().name, "rtsp://cam/1")]  # carried out here, not on "http"


def test_a_stopping_pipeline_refuses_requests_at_once():
    clock = Clock()
    view = make_view(clock, added=[])
    view.publish(RunStatus(turned_at=clock.now, phase="stopping_capture", running=False))

    with pytest.raises(StreamRequestError, match="stopping"):
        view.add_stream(SourceConfig(uri="rtsp://cam/1"))


def test_a_request_the_loop_never_gets_to_times_out():
    requests = LoopRequests(timeout_s=0.05)
    with pytest.raises(TimeoutError):
        requests.call(lambda: {})


def test_the_supervisors_metrics_come_from_the_published_status():
    clock = Clock()
    view = make_view(clock)
    view.publish(RunStatus(turned_at=clock.now, stages=STAGES, streams=STREAMS))
    view.lost_with_stages = {("dock", "stage_crash"): 3}

    state = view.metrics_state()

    assert state.stream_states == {"dock": "live", "yard": "reconnecting"}
    assert state.stream_reasons == {"dock": "opened", "yard": "flapping"}
    assert state.stage_restarts == {"temporal": 0, "embed:0": 2, "embed:1": 6}  # 0 included: alerts see it rise
    assert state.stages_up == {"temporal": 1, "embed": 1}
    assert state.lost_with_stages == {("dock", "stage_crash"): 3}
