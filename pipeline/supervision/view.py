"""What other threads may see of and ask of a running pipeline: the one seam between them and the supervisor.

The HTTP servers (control API, live page), signal handlers and programs
embedding the pipeline run on threads of their own; the supervisor's loop
owns the stream table and the stage processes. They meet here:

* the loop publishes a :class:`RunStatus` at the end of every turn, and
  :class:`SupervisorView` answers every question from the latest one (plus
  the frame counters, read from the metrics files), never from the loop's
  own objects;
* a request that changes something (add or remove a stream) is queued
  (:class:`LoopRequests`) and carried out on the loop's thread, and its
  answer (or its refusal) comes back to the caller.

The servers take a :class:`PipelineView` (the protocol), so their routes are
tested against a small fake.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.config import SourceConfig
from pipeline.metrics import StreamCounters, SupervisorState
from pipeline.supervision.registry import ResumeRequest, StreamRequestError
from pipeline.supervision.report import counter_fields, stream_row

REQUEST_TIMEOUT_S = 10.0
LIVENESS_S = 5.0  # /healthz fails when the loop has not turned for this long


def run_status(now: float, phase: str, running: bool, announced: bool, stages: list, restarts: dict[str, int],
               entries: list, open_actions: dict[str, dict] | None = None) -> RunStatus:
    """What the loop publishes at the end of a turn: its phase, its stage processes and its streams."""
    return RunStatus(
        turned_at=now, phase=phase, running=running, announced=announced,
        stages=tuple({"name": s.name, "kind": s.kind.value, "pid": s.pid, "alive": s.alive, "ready": s.ready,
                      "given_up": s.given_up, "restarts": restarts.get(s.name, 0)} for s in stages),
        waiting_for=tuple(sorted(s.name for s in stages if not s.ready and not s.given_up)),
        streams=tuple(stream_row(e) for e in entries),
        open_actions={stream: dict(info.get("actions", {})) for stream, info in (open_actions or {}).items()},
    )


class PipelineView(Protocol):
    def streams(self) -> list[dict]:
        """Every stream: name, redacted URI, state, reason, last error, frame counters."""

    def stages(self) -> list[dict]:
        """Every stage process: name, pid, ready, restarts, given up."""

    def health(self) -> tuple[bool, dict]:
        """Liveness: the supervisor's loop is turning."""

    def readiness(self) -> tuple[bool, dict]:
        """Readiness: running, with every stage up."""

    def add_stream(self, source: SourceConfig) -> dict:
        """Start a stream; raises StreamRequestError (with a ``code``) when refused, TimeoutError when busy."""

    def remove_stream(self, name: str) -> dict:
        """End a stream's sequence and forget it; raises StreamRequestError when refused."""


@dataclass(frozen=True)
class RunStatus:
    """The loop's state as of its last turn."""

    turned_at: float  # the supervisor's clock
    phase: str = "running"
    running: bool = True  # not stopping
    announced: bool = False  # every stage was up once
    waiting_for: tuple[str, ...] = ()  # stages not up (and not given up)
    streams: tuple[dict, ...] = ()
    stages: tuple[dict, ...] = ()
    open_actions: dict[str, dict[str, float]] = field(default_factory=dict)  # stream -> action -> confidence


class LoopRequests:
    """Calls handed to the loop from other threads, each run on the loop's thread and answered through a future."""

    def __init__(self, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._timeout_s = timeout_s

    def call(self, fn: Callable[[], dict]) -> dict:
        """``fn``'s answer (or its exception); TimeoutError when the loop does not get to it in time."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future.result(timeout=self._timeout_s)

    def serve(self) -> None:
        """On the loop's thread: carry out every call waiting."""
        while True:
            try:
                fn, future = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except Exception as exc:  # handed to the caller, who answers with it
                future.set_exception(exc)


@dataclass
class SupervisorView:
    """A :class:`PipelineView` over what the loop publishes. ``add``/``remove`` run on the loop's thread;
    ``counters`` reads every stream's frame counters (from the run's metrics files)."""

    requests: LoopRequests
    add: Callable[[SourceConfig], dict]
    remove: Callable[[str], dict]
    counters: Callable[[], dict[str, StreamCounters]]
    clock: Callable[[], float] = time.monotonic
    # Cluster mode (the node agent): a stream continued from another node's snapshot, and one moved out.
    resume: Callable[[SourceConfig, ResumeRequest], dict] | None = None
    move: Callable[[str], dict] | None = None
    # Frames the run's summary found lost with a dead stage, per (stream, "stage_crash"): the last scrape adds them.
    lost_with_stages: dict[tuple[str, str], int] = field(default_factory=dict)
    _status: RunStatus = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._status = RunStatus(turned_at=self.clock())

    def publish(self, status: RunStatus) -> None:
        with self._lock:
            self._status = status

    @property
    def status(self) -> RunStatus:
        with self._lock:
            return self._status

    def metrics_state(self) -> SupervisorState:
        """What the supervisor's own metrics export (``pipeline.metrics.SupervisorCollector``): each stream's
        state and reason, each stage's restarts (0 included: a series that exists from the start is one alerts
        can see rise), running processes per kind, and frames lost with dead stages."""
        status = self.status
        up: dict[str, int] = {}
        for row in status.stages:
            up[row["kind"]] = up.get(row["kind"], 0) + (1 if row["alive"] else 0)
        return SupervisorState(
            stream_states={row["name"]: row["state"] for row in status.streams},
            stream_reasons={row["name"]: row["reason"] for row in status.streams},
            stage_restarts={row["name"]: row["restarts"] for row in status.stages}, stages_up=up,
            lost_with_stages=dict(self.lost_with_stages),
        )

    def streams(self) -> list[dict]:
        counters = self.counters()
        now_wall = time.time()
        return [{**row, **counter_fields(counters.get(row["name"]), now_wall)} for row in self.status.streams]

    def stages(self) -> list[dict]:
        return [dict(row) for row in self.status.stages]

    def open_actions(self) -> dict[str, dict[str, float]]:
        """The actions the temporal worker last reported open, per stream (action -> confidence so far)."""
        return {stream: dict(actions) for stream, actions in self.status.open_actions.items()}

    def health(self) -> tuple[bool, dict]:
        status = self.status
        age = self.clock() - status.turned_at
        return age < LIVENESS_S, {"status": "ok" if age < LIVENESS_S else "stalled", "loop_age_s": round(age, 3),
                                  "phase": status.phase}

    def readiness(self) -> tuple[bool, dict]:
        status = self.status
        if not status.running:
            return False, {"status": "stopping", "phase": status.phase}
        if status.waiting_for or not status.stages:
            return False, {"status": "degraded" if status.announced else "starting",
                           "waiting_for": list(status.waiting_for)}
        return True, {"status": "ready", "stages": sorted(row["name"] for row in status.stages)}

    def add_stream(self, source: SourceConfig) -> dict:
        return self._call(lambda: self.add(source))

    def remove_stream(self, name: str) -> dict:
        return self._call(lambda: self.remove(name))

    def resume_stream(self, source: SourceConfig, resume: ResumeRequest) -> dict:
        """Start a stream that comes from another node, continued from its snapshot."""
        return self._call(lambda: self.resume(source, resume))

    def move_out(self, name: str) -> dict:
        """End a stream at a step boundary with its state snapshotted, for another node to continue; its row
        says ``moved`` (with where its snapshot is) once that state is written."""
        return self._call(lambda: self.move(name))

    def _call(self, fn: Callable[[], dict]) -> dict:
        if not self.status.running:
            raise StreamRequestError("the pipeline is stopping")
        return self.requests.call(fn)
