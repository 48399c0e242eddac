"""The supervisor: one loop that owns the stream table and the stage processes, restarts what dies,
and drains on a stop.

Failure is contained at the smallest unit that owns it:

* a stream that cannot be opened or read is its capture worker's business
  (reconnect, or fail that stream); the supervisor records its state;
* a stage process that dies is restarted with backoff (``RestartPolicy``);
  only what lived in it is lost: a capture worker's streams start new
  sequences (replays resume where they were), an embed worker's frames in
  flight are counted lost, the temporal worker's streams continue from their
  snapshots (replays read again from there; without one, afresh, actions closed);
* the run ends when asked, when every stream has ended or failed (unless
  ``control.keep_running``), or when a stage cannot run at all.

Stopping drains in stage order: capture workers stop reading, send what they
read and each stream's END; then embed workers process what is in flight;
then the temporal worker; then the overlay. Nothing read is lost, and the
whole drain is bounded by ``supervision.stop_timeout_s``.

Around the loop, :meth:`Supervisor.run` sets the run up and takes it down:
the checks (:mod:`~pipeline.supervision.preflight`), the run's folder, the
metrics, the HTTP servers (:mod:`pipeline.web`), the stages' settings
(:mod:`~pipeline.supervision.launch`) and the summary
(:mod:`~pipeline.supervision.report`). Other threads (the HTTP servers, a
program embedding the pipeline) see the loop only through ``view``
(:mod:`~pipeline.supervision.view`): what it published at the end of its
last turn, and requests it carries out on its own thread. Signal handlers
only record (:mod:`~pipeline.supervision.signals`); the loop decides what a
signal means, and keeps the run folder there when a temp cleaner deletes it
(:mod:`~pipeline.supervision.run_folder`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path

import zmq

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.metrics import build_registry, collected_in, read_output_counters, read_stream_counters
from pipeline.stages.settings import EmbedSettings, StageKind
from pipeline.supervision import launch, report
from pipeline.supervision.limits import MachineFacts, machine_facts
from pipeline.supervision.preflight import onnx_path_for, preflight
from pipeline.supervision.processes import StageProcess, kill_all, release_finished
from pipeline.supervision.registry import StreamRequestError, StreamTable
from pipeline.supervision.restart import StageRestarts
from pipeline.supervision.run_folder import RunFolder
from pipeline.supervision.signals import SignalInbox, StopDecision, StopSignals
from pipeline.supervision.signals import install_signal_handlers as install_stop_handlers
from pipeline.supervision.stream_control import StreamControl
from pipeline.supervision.view import LoopRequests, SupervisorView, run_status
from pipeline.transport.control import (
    ControlMessageError,
    Drain,
    Heartbeat,
    Hello,
    Release,
    RemoveStream,
    ResumeReady,
    StageDone,
    StageFailed,
    StopReading,
    StreamChanged,
    StreamMovedOut,
    StreamRestored,
    SupervisorChannel,
    UpstreamLost,
)
from pipeline.web.servers import Servers, start_servers

logger = logging.getLogger(__name__)

HANG_AFTER_S = 30.0  # a ready stage silent this long is killed (and restarted)
CONTROL_POLL_S = 0.05


class Phase(IntEnum):
    RUNNING = 0
    STOPPING_CAPTURE = 1
    DRAINING_EMBED = 2
    DRAINING_TEMPORAL = 3
    DRAINING_OVERLAY = 4
    DONE = 5


# Which stages each phase of a stop waits for.
DRAINING = {Phase.STOPPING_CAPTURE: StageKind.CAPTURE, Phase.DRAINING_EMBED: StageKind.EMBED,
            Phase.DRAINING_TEMPORAL: StageKind.TEMPORAL, Phase.DRAINING_OVERLAY: StageKind.OVERLAY}


class Supervisor(StreamControl):
    def __init__(
        self,
        config: PipelineConfig,
        on_ready: Callable[[str | None], None] | None = None,
        on_complete: Callable[[str | None], None] | None = None,
        machine: MachineFacts | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._on_ready = on_ready
        # Called after every stage finished, while the metrics endpoint still serves the final counts.
        self._on_complete = on_complete
        self._machine = machine
        self._clock = clock
        self._stop_requested = threading.Event()
        self._hurry = threading.Event()
        self._started = threading.Event()
        self._requests = LoopRequests()
        self.signals = SignalInbox(StopSignals(config.supervision.double_signal_window_s, clock))
        self._phase = Phase.RUNNING
        self._failure = ""
        self._interrupted = False
        self._stages: dict[str, StageProcess] = {}
        self._open_actions: dict[str, dict] = {}
        self._ready_announced = False
        self._stop_deadline: float | None = None
        self._registry = None
        self._servers = Servers()
        # Set up by run(): the run folder's metrics directory, and the supervisor's end of the control channel.
        self._metrics_dir: Path | None = None
        self._folder: RunFolder | None = None
        self._channel: SupervisorChannel | None = None
        self._restarts = StageRestarts(config.supervision.restart_policy(), rng or random.Random())
        self.table = StreamTable(config.temporal.capacity)
        self.view = SupervisorView(self._requests, lambda source: self._add_stream(source, from_api=True),
                                   self._remove_stream, self._counters, clock, self._resume_stream, self._move_out)

    # -- for other threads: signal handlers; the HTTP servers and embedding programs use ``view`` -------
    def request_stop(self, *_args) -> None:
        """Stop reading sources; what was read is still processed. A second request stops without draining
        (signals go through ``signals`` first, which tells a repeat of the first from a second request)."""
        if self._stop_requested.is_set():
            self._hurry.set()
        self._stop_requested.set()

    @property
    def started(self) -> bool:
        """The run's metrics and servers are up (stages may still be starting)."""
        return self._started.is_set()

    @property
    def metrics_url(self) -> str | None:
        return self._servers.metrics_url

    @property
    def control_url(self) -> str | None:
        return self._servers.control_url

    @property
    def live_url(self) -> str | None:
        return self._servers.live_url

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> report.RunSummary:
        checked = preflight(self.config, self._machine)
        # From here on, the engine settings are the ones this machine runs (unset workers and threads resolved).
        self.config = self.config.model_copy(update={"engine": checked.engine})
        onnx_path = onnx_path_for(self.config.engine)
        if checked.events != self.config.events:  # logged once every check passed: a refusal stays one line
            logger.info("event detector settings of the model: %s", checked.events.model_dump())
        folder = self._folder = RunFolder(self.config.transport.ipc_dir)
        self._metrics_dir = folder.metrics
        context = zmq.Context()
        try:
            with collected_in(folder.metrics):
                self._registry = build_registry(folder.metrics, self.view.metrics_state)
                self._servers = start_servers(self.config, self.view, self._registry, folder.live)
                self._started.set()
                self._channel = SupervisorChannel(context, folder.endpoint("control"))
                machine = self._machine or machine_facts()
                for settings in launch.stage_settings(self.config, checked.head, checked.events, onnx_path, folder,
                                                      self._channel.endpoint, os.getpid(), machine.cpu_count):
                    self._stages[settings.stage] = StageProcess(settings)
                for stage in self._stages.values():
                    stage.spawn(folder.metrics, self._clock())
                for source in self.config.sources:
                    try:
                        self._add_stream(source, from_api=False)
                    except StreamRequestError as exc:
                        raise PipelineError(str(exc)) from None
                self._loop()
                release_finished(list(self._stages.values()), lambda stage: self._send(stage, Release()))
                summary = self._summary()
                if self._on_complete:
                    self._on_complete(self.metrics_url)
                return summary
        finally:
            kill_all(list(self._stages.values()), folder.metrics)
            self._servers.close()
            if self._channel is not None:
                self._channel.close()
            context.term()
            folder.remove()

    def _of_kind(self, kind: StageKind) -> list[StageProcess]:
        return [s for s in self._stages.values() if s.kind is kind]

    def _send(self, stage: StageProcess, message: object) -> bool:
        if self._channel.send(stage.name, message):
            return True
        logger.debug("control message to %s not delivered (not connected): the stage's Hello resends", stage.name)
        return False

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while self._phase is not Phase.DONE:
            now = self._clock()
            self._folder.keep({s.pid for s in self._stages.values() if s.alive})
            self._take_signals()
            self._receive(CONTROL_POLL_S)
            self._requests.serve()
            self._check_processes(now)
            self._restart_due(now)
            self._check_moves(now)
            self._announce_ready()
            self._advance(now)
            self._publish_status(now)

    def _take_signals(self) -> None:
        for name, decision in self.signals.take():
            if decision is StopDecision.DRAIN:
                logger.info("%s: stopping", name)
            elif decision is StopDecision.SAME_REQUEST:
                logger.info("%s again within supervision.double_signal_window_s of the first: the same stop "
                            "request", name)
                continue
            if decision is StopDecision.STOP_NOW:
                self._hurry.set()
            self._stop_requested.set()

    def _receive(self, timeout_s: float) -> None:
        for name, message in self._channel.receive(timeout_s):
            stage = self._stages.get(name)
            if stage is None:
                continue
            if isinstance(message, ControlMessageError):
                logger.warning("%s sent a malformed control message: %s", name, message)
                continue
            self._on_message(stage, message)

    def _on_message(self, stage: StageProcess, message: object) -> None:
        stage.last_seen = self._clock()
        if isinstance(message, Hello):
            if message.pid != stage.pid:
                return  # a predecessor's last words
            stage.ready = True
            logger.debug("%s is up (pid %d)", stage.name, message.pid)
            self._on_stage_up(stage)
        elif isinstance(message, StreamChanged):
            self.table.record(message.stream, message.generation, message.state, message.reason, message.error)
        elif isinstance(message, Heartbeat):
            if stage.kind is StageKind.CAPTURE:
                for name, info in message.streams.items():
                    self.table.progress(name, info.get("generation", -1), info.get("last_t"), self._clock())
            elif stage.kind is StageKind.TEMPORAL:
                self._open_actions = message.streams
                if failing := message.detail.get("failing_outputs"):
                    logger.debug("outputs failing: %s", failing)
        elif isinstance(message, StreamRestored):  # the temporal worker's successor continues a replay from there
            if self._phase is Phase.RUNNING and self.table.rewind(message.stream, message.generation, message.t):
                logger.info("stream %s: read again after t=%.3f s", message.stream, message.t)
                self._deliver_streams()
        elif isinstance(message, ResumeReady):
            self._on_resume_ready(message)
        elif isinstance(message, StreamMovedOut):
            self._on_moved_out(message)
        elif isinstance(message, StageDone):
            stage.done = True
            stage.result = message.detail
        elif isinstance(message, StageFailed):
            stage.failed = message
            # A fatal error is reported once, by the give-up that follows; others precede a restart.
            logger.log(logging.DEBUG if message.fatal else logging.ERROR, "%s failed: %s", stage.name, message.error)

    def _on_stage_up(self, stage: StageProcess) -> None:
        """A (re)started stage said Hello: tell it what it missed, and hand out streams it can now serve."""
        if stage.kind is StageKind.CAPTURE:
            if self._phase >= Phase.STOPPING_CAPTURE:
                self._send(stage, StopReading())
        elif self._phase >= next(p for p, kind in DRAINING.items() if kind is stage.kind):
            stage.drain_sent = self._send(stage, Drain())
        if stage.kind is StageKind.TEMPORAL:
            self._ask_pending_resumes()
        self._deliver_streams()

    def _downstream_ready(self) -> bool:
        """Frames can be processed: the temporal worker and an embed worker are up.
        Streams start only then, so that the first frames do not wait for an engine to load (nor miss
        the overlay, when there is one)."""
        overlay = self._stages.get("overlay")
        # Only its first start is waited for: a restarting overlay must not hold up new streams.
        overlay_ok = overlay is None or overlay.ready or overlay.given_up or self._restarts.total.get("overlay", 0) > 0
        return (self._stages["temporal"].ready and any(s.ready for s in self._of_kind(StageKind.EMBED))
                and overlay_ok)

    def _deliver_streams(self) -> None:
        """Hand every stream not yet served by its worker's current process to that process."""
        if self._phase is not Phase.RUNNING or not self._downstream_ready():
            return
        for stage in self._of_kind(StageKind.CAPTURE):
            if not stage.ready:
                continue
            for entry in self.table.served_by(stage.name):
                if not entry.delivered and not entry.awaiting_resume:
                    start_t = self.table.start_time(entry, self._clock())
                    entry.delivered = self._send(stage, launch.add_stream_message(self.config, entry, start_t))
                    if entry.removing:
                        self._send(stage, RemoveStream(entry.name, "moved" if entry.moving_since else "removed"))

    def _check_processes(self, now: float) -> None:
        for stage in self._stages.values():
            if stage.process is None or stage.exited:
                continue
            code = stage.process.poll()
            if code is None:
                # A finished stage waiting for Release is silent by design.
                if stage.ready and not stage.done and now - stage.last_seen > HANG_AFTER_S:
                    logger.error("%s sent nothing for %.0f s: killing it", stage.name, now - stage.last_seen)
                    stage.process.kill()
                continue
            if not stage.done:
                self._receive(0.1)  # its last words (StageFailed, a last report) may still be on the way
            stage.reap(self._metrics_dir)
            if stage.done:  # its work was done: nothing to restart, whatever ended the process it was held in
                if code == 0:
                    logger.debug("%s finished", stage.name)
                else:
                    logger.warning("%s ended (%s) after it had finished its work", stage.name, stage.exit_error(code)[0])
                continue
            self._died(stage, code, now)

    def _died(self, stage: StageProcess, code: int, now: float) -> None:
        error, fatal = stage.exit_error(code)
        if stage.kind is StageKind.CAPTURE and self._phase >= Phase.STOPPING_CAPTURE:
            self.table.end_served_by(stage.name, "stopped")
            logger.warning("%s died while stopping (%s); its streams end here", stage.name, error)
            return
        decision = self._restarts.on_exit(stage.name, now, fatal, error)
        if not decision.restart:
            self._give_up(stage, decision.reason, fatal)
            return
        stage.restart_at = now + decision.delay_s
        logger.error("%s died (%s); restarting it in %.1f s", stage.name, error, decision.delay_s)
        if stage.kind is StageKind.CAPTURE:
            moved = self.table.reassign(stage.name)
            if moved:
                logger.warning("streams %s lost their capture process: they resume in a new sequence",
                               ", ".join(e.name for e in moved))
        elif isinstance(stage.settings, EmbedSettings):  # an embed worker (and its index, for the temporal)
            temporal = self._stages["temporal"]
            if temporal.ready:
                self._send(temporal, UpstreamLost(stage.name, stage.settings.worker))
        elif stage.kind is StageKind.TEMPORAL:
            logger.warning("the temporal worker died: its successor continues streams from their snapshots")

    def _give_up(self, stage: StageProcess, reason: str, fatal: bool) -> None:
        stage.given_up = True
        message = f"stage {stage.name} failed: {stage.failed.error}" if fatal and stage.failed else reason
        others_up = any(not s.given_up for s in self._of_kind(stage.kind))
        if stage.kind is StageKind.CAPTURE and others_up:
            self.table.fail_served_by(stage.name, "capture_failed", message)
            logger.error("%s; its streams fail, the others run on", message)
            return
        if stage.kind is StageKind.EMBED and others_up:
            logger.error("%s; the other embed workers carry on", message)
            return
        if stage.kind is StageKind.OVERLAY:
            logger.error("%s; scoring and the other outputs carry on without the overlay", message)
            return
        logger.error("%s; the pipeline cannot run without it", message)
        self._failure = message
        self._stop_now()

    def _restart_due(self, now: float) -> None:
        for stage in self._stages.values():
            if stage.restart_at is not None and now >= stage.restart_at and not stage.given_up:
                if stage.kind is StageKind.CAPTURE and self._phase >= Phase.STOPPING_CAPTURE:
                    stage.restart_at = None
                    continue
                if stage.kind is StageKind.TEMPORAL:
                    # The successor closes the actions its predecessor had open, and takes the numbering
                    # of each stream's current generation as it comes.
                    stage.settings = launch.temporal_after_restart(
                        stage.settings, {e.name: e.generation for e in self.table.active()}, self._open_actions,
                        self.table.rewound(self.config.replay.loop))
                stage.spawn(self._metrics_dir, self._clock())

    def _announce_ready(self) -> None:
        if self._ready_announced or not all(s.ready for s in self._stages.values()):
            return
        self._ready_announced = True
        logger.info("pipeline running: %d stream(s), %d embed worker(s), %d capture worker(s)",
                    len(self.table.entries()), self.config.engine.workers, self.config.capture.workers)
        if self._on_ready:
            self._on_ready(self.metrics_url)

    # -- stopping --------------------------------------------------------------------------------
    def _keep_running(self) -> bool:
        return self.config.control.keep_running or not self.config.sources

    def _advance(self, now: float) -> None:
        if self._phase is Phase.DONE:
            return
        if self._hurry.is_set():
            logger.warning("stopping without draining (second stop request): frames in flight are lost")
            self._interrupted = True
            self._failure = "stopped without draining (a second stop request): frames in flight were lost"
            self._stop_now()
            return
        if self._phase is Phase.RUNNING:
            finished = bool(self.table.entries()) and self.table.all_finished and not self._keep_running()
            if self._stop_requested.is_set() or finished:
                self._interrupted = self._stop_requested.is_set()
                self._begin_stop(now, "stop requested" if self._interrupted else "every stream has finished")
            return
        if self._stop_deadline is not None and now > self._stop_deadline:
            alive = [s.name for s in self._stages.values() if s.alive]
            timeout = self.config.supervision.stop_timeout_s
            logger.error("the drain did not finish within %.0f s (still running: %s): killing them", timeout,
                         ", ".join(alive))
            self._failure = self._failure or f"the drain did not finish within {timeout:g} s"
            self._stop_now()
            return
        kind = DRAINING[self._phase]
        # A stage that said StageDone has finished, though its process lives on until released (release_finished).
        pending = [s for s in self._of_kind(kind)
                   if not s.given_up and not s.done and (s.alive or s.restart_at is not None)]
        if kind is StageKind.CAPTURE:
            pending = [s for s in pending if s.alive]
        if pending:
            for stage in pending:
                if kind is not StageKind.CAPTURE and stage.ready and not stage.drain_sent:
                    stage.drain_sent = self._send(stage, Drain())
            return
        self._phase = Phase(self._phase + 1)
        if self._phase is not Phase.DONE:
            logger.debug("drain: %s", self._phase.name.lower())

    def _begin_stop(self, now: float, why: str) -> None:
        logger.info("stopping (%s): sources stop, what was read is processed", why)
        self._phase = Phase.STOPPING_CAPTURE
        self._stop_deadline = now + self.config.supervision.stop_timeout_s
        for stage in self._of_kind(StageKind.CAPTURE):
            stage.restart_at = None
            if stage.ready:
                self._send(stage, StopReading())

    def _stop_now(self) -> None:
        kill_all(list(self._stages.values()), self._metrics_dir)
        self.table.finish_all("stopped")
        self._phase = Phase.DONE

    # -- streams (the requests are in stream_control.py) -------------------------------------------
    def _counters(self) -> dict:
        return read_stream_counters(self._registry) if self._registry is not None else {}

    def _publish_status(self, now: float) -> None:
        self.view.publish(run_status(now, self._phase.name.lower(), self._phase is Phase.RUNNING,
                                     self._ready_announced, list(self._stages.values()), self._restarts.total,
                                     self.table.entries(), self._open_actions))

    # -- the summary -------------------------------------------------------------------------------
    def _summary(self) -> report.RunSummary:
        overlay = self._stages.get("overlay")
        summary, lost = report.summarise(
            self.table.entries(), read_stream_counters(self._registry),
            self._stages["temporal"].result.get("streams", {}),
            engines=[s.result.get("engine", "") for s in self._of_kind(StageKind.EMBED)],
            restarts=self._restarts.total, interrupted=self._interrupted, failure=self._failure,
            overlay_crashed=overlay is not None and (overlay.given_up or self._restarts.total.get("overlay", 0) > 0),
            outputs=read_output_counters(self._registry), overlay_video=self.config.overlay.out_dir is not None,
        )
        summary.metrics_url, summary.control_url = self.metrics_url, self.control_url
        self.view.lost_with_stages = {(name, "stage_crash"): count for name, count in lost.items()}
        return summary


def install_signal_handlers(supervisor: Supervisor) -> None:
    """SIGINT, SIGTERM and SIGHUP drain; see :mod:`~pipeline.supervision.signals`."""
    install_stop_handlers(supervisor.signals)
