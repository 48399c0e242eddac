"""The supervisor: starts the stage processes, owns the stream table, restarts
what dies, serves metrics and the control API, drains on a stop, and reports
a per-stream summary.

Processes. Stages are plain child processes (``python -m pipeline.stages
KIND``, settings as JSON on stdin) that talk to the supervisor over a ZeroMQ
control channel (:mod:`pipeline.transport.control`). They start with SIGINT and SIGTERM
blocked and then ignore them, so a signal to the whole process group (Ctrl-C,
systemd, ``timeout``) reaches only the supervisor, which drains; they exit on
their own within a second if the supervisor is gone.

Failure is contained at the smallest unit that owns it:

* a stream that cannot be opened or read is its capture worker's business
  (reconnect, or fail that stream); the supervisor records its state;
* a stage process that dies is restarted with backoff (``RestartPolicy``);
  only what lived in it is lost: a capture worker's streams start new
  sequences (replays resume where they were), an embed worker's frames in
  flight are counted lost, the temporal worker's GRU states start afresh and
  the actions it had open are closed;
* the run ends when asked, when every stream has ended or failed (unless
  ``control.keep_running``), or when a stage cannot run at all.

Stopping drains in stage order: capture workers stop reading, send what they
read and each stream's END; then embed workers process what is in flight;
then the temporal worker. Nothing read is lost, and the whole drain is
bounded by ``supervision.stop_timeout_s``.

Exit status (:attr:`RunSummary.exit_code`): 0 when the run did its job (or
was stopped and drained) and no stream failed; 1 when a stage could not run,
every stream failed, or a second stop request cut the drain short; 3 when it
finished with some streams failed.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import zmq

from engines.factory import DEFAULT_ONNX_PATH, REPO_ROOT
from engines.head_config import HeadConfig, read_head_config, read_head_events
from pipeline.backoff import Backoff
from pipeline.config import (
    ConfigError,
    PipelineConfig,
    SourceConfig,
    events_for_model,
    is_loopback,
    live_settings,
    stream_name,
)
from pipeline.transport.control import (
    AddStream,
    ControlMessageError,
    Drain,
    Heartbeat,
    Hello,
    RemoveStream,
    StageDone,
    StageFailed,
    StopReading,
    StreamChanged,
    UpstreamLost,
    decode,
    encode,
)
from pipeline.supervision.limits import MachineFacts, check_worker_counts, decoder_threads_for, machine_facts
from pipeline.metrics import MULTIPROC_ENV, build_registry, mark_process_dead, read_stream_counters
from pipeline.outputs.files import OutputError, prepare_output
from pipeline.supervision.restart import RestartPolicy, StageRestarts
from pipeline.sources.lifecycle import StreamState
from pipeline.supervision.registry import StreamEntry, StreamRequestError, StreamTable
from pipeline.sources.uri import SourceKind, UriError, classify, redact

logger = logging.getLogger(__name__)

HANG_AFTER_S = 30.0  # a ready stage silent this long is killed (and restarted)
CONTROL_POLL_S = 0.05
REQUEST_TIMEOUT_S = 10.0
DOWNSTREAM_DROP_REASONS = ("late", "reorder_timeout", "stage_crash")


class PipelineError(RuntimeError):
    """The pipeline cannot start or run; the message says which part and why."""


class Phase(IntEnum):
    RUNNING = 0
    STOPPING_CAPTURE = 1
    DRAINING_EMBED = 2
    DRAINING_TEMPORAL = 3
    DRAINING_OVERLAY = 4
    DONE = 5


@dataclass
class RunSummary:
    streams: dict[str, dict] = field(default_factory=dict)
    engines: list[str] = field(default_factory=list)
    metrics_url: str | None = None
    control_url: str | None = None
    interrupted: bool = False
    exit_code: int = 0
    failure: str = ""
    restarts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Stage:
    name: str
    kind: str
    settings: dict
    process: subprocess.Popen | None = None
    ready: bool = False
    done: bool = False
    failed: StageFailed | None = None
    given_up: bool = False
    exited: bool = False
    restart_at: float | None = None
    last_seen: float = 0.0
    result: dict = field(default_factory=dict)
    drain_sent: bool = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
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
        self._rng = rng or random.Random()
        self._clock = clock
        self._stop_requested = threading.Event()
        self._hurry = threading.Event()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._snapshot_lock = threading.Lock()
        self._snapshot: list[dict] = []
        self._phase = Phase.RUNNING
        self._failure = ""
        self._interrupted = False
        self._last_loop = clock()
        self._stages: dict[str, _Stage] = {}
        self._open_actions: dict[str, dict] = {}
        self._ready_announced = False
        self._stop_deadline: float | None = None
        self._registry = None
        self._extra_drops: dict[tuple[str, str], int] = {}  # frames known lost with a dead stage
        self._stream_states: dict[str, str] = {}
        self._events = config.events
        self.metrics_url: str | None = None
        self.control_url: str | None = None
        self.live_url: str | None = None
        restart = config.supervision
        self._restarts = StageRestarts(
            RestartPolicy(Backoff(restart.restart_initial_s, max(restart.restart_initial_s, restart.restart_max_s)),
                          restart.max_restarts, restart.restart_window_s),
            self._rng,
        )
        self.table = StreamTable(config.temporal.capacity)

    # -- thread-safe API (signal handlers, the control API, embedding programs) ---------------
    def request_stop(self, *_args) -> None:
        """Stop reading sources; what was read is still processed. A second request stops without draining."""
        if self._stop_requested.is_set():
            self._hurry.set()
        self._stop_requested.set()

    def add_stream(self, source: SourceConfig) -> dict:
        return self._call(lambda: self._add_stream(source, from_api=True))

    def remove_stream(self, name: str) -> dict:
        return self._call(lambda: self._remove_stream(name))

    def streams(self) -> list[dict]:
        """Every stream with its state and counters (a snapshot; safe from any thread)."""
        with self._snapshot_lock:
            rows = [dict(row) for row in self._snapshot]
        counters = read_stream_counters(self._registry) if self._registry is not None else {}
        for row in rows:
            row.update(self._counter_fields(counters.get(row["name"])))
        return rows

    def health(self) -> tuple[bool, dict]:
        """Liveness: the supervisor's loop is turning."""
        age = self._clock() - self._last_loop
        return age < 5.0, {"status": "ok" if age < 5.0 else "stalled", "loop_age_s": round(age, 3),
                           "phase": self._phase.name.lower()}

    def readiness(self) -> tuple[bool, dict]:
        """Readiness: running, every stage up."""
        if self._phase is not Phase.RUNNING:
            return False, {"status": "stopping", "phase": self._phase.name.lower()}
        waiting = sorted(s.name for s in list(self._stages.values()) if not s.ready and not s.given_up)
        if waiting or not self._stages:
            return False, {"status": "starting" if not self._ready_announced else "degraded", "waiting_for": waiting}
        return True, {"status": "ready", "stages": sorted(self._stages)}

    def stages(self) -> list[dict]:
        return [
            {"name": s.name, "pid": s.process.pid if s.process else None, "ready": s.ready,
             "restarts": self._restarts.total.get(s.name, 0), "given_up": s.given_up}
            for s in list(self._stages.values())
        ]

    @property
    def event_settings(self):
        """The event detector's settings this run uses (the model's, then the config's explicit keys);
        known after :meth:`preflight`."""
        return self._events

    def _call(self, fn: Callable[[], dict]) -> dict:
        if self._phase is not Phase.RUNNING:
            raise StreamRequestError("the pipeline is stopping")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._requests.put((fn, future))
        return future.result(timeout=REQUEST_TIMEOUT_S)

    # -- the run ---------------------------------------------------------------------------------
    def preflight(self) -> HeadConfig:
        """Everything that can be checked before a process starts; raises ConfigError or PipelineError."""
        cfg = self.config
        head = read_head_config(cfg.model)
        self._events = events_for_model(cfg.events, read_head_events(cfg.model))
        problems = check_worker_counts(cfg.engine.workers, cfg.capture.workers, self._machine or machine_facts(),
                                       gpu_backend=cfg.engine.backend.endswith("cuda") or cfg.engine.backend == "tensorrt")
        if problems:
            raise ConfigError("; ".join(problems))
        for setting, path in (("outputs.events_jsonl", cfg.outputs.events_jsonl),
                              ("outputs.scores_jsonl", cfg.outputs.scores_jsonl)):
            if path is not None:
                try:
                    prepare_output(Path(path), setting, cfg.outputs.existing, cfg.outputs.keep_rotated)
                except OutputError as exc:
                    raise ConfigError(str(exc)) from None
        if cfg.outputs.events_pub:
            _check_bindable(cfg.outputs.events_pub, "outputs.events_pub")
        if cfg.overlay.out_dir is not None:
            try:
                Path(cfg.overlay.out_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"overlay.out_dir: cannot create {cfg.overlay.out_dir} ({exc.strerror}); "
                                  "choose a folder this user can write") from None
        return head

    def _onnx_path(self) -> str | None:
        cfg = self.config.engine
        if not (cfg.backend.startswith("onnxruntime") or cfg.backend in ("auto", "tensorrt")):
            return None
        if cfg.onnx_path is not None:
            if not Path(cfg.onnx_path).is_file():
                raise ConfigError(f"engine.onnx_path: {cfg.onnx_path} does not exist")
            return str(Path(cfg.onnx_path).resolve())
        if not DEFAULT_ONNX_PATH.is_file():
            logger.info("exporting the ONNX backbone to %s (once)", DEFAULT_ONNX_PATH)
            from engines.backbone import ensure_onnx

            ensure_onnx(DEFAULT_ONNX_PATH)
        return str(DEFAULT_ONNX_PATH)

    def run(self) -> RunSummary:
        head = self.preflight()
        onnx_path = self._onnx_path()
        if self._events != self.config.events:  # logged once every check passed: a refusal stays one line
            logger.info("event detector settings of the model: %s", self._events.model_dump())
        run_dir = Path(tempfile.mkdtemp(prefix="actionpipe-", dir=self._ipc_parent()))
        metrics_dir = run_dir / "metrics"
        metrics_dir.mkdir()
        previous_env = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
        context = zmq.Context()
        servers: list = []
        self._run_dir, self._metrics_dir = run_dir, metrics_dir
        self._live_dir = run_dir / "live"
        self._live_dir.mkdir()
        try:
            self._registry = build_registry(metrics_dir, self._metrics_state)
            servers = self._start_servers()
            self._control = context.socket(zmq.ROUTER)
            self._control.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._control.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self._control.setsockopt(zmq.LINGER, 0)
            self._control_endpoint = f"ipc://{run_dir}/control"
            self._control.bind(self._control_endpoint)
            self._define_stages(head, onnx_path, run_dir)
            for stage in self._stages.values():
                self._spawn(stage)
            for source in self.config.sources:
                try:
                    self._add_stream(source, from_api=False)
                except StreamRequestError as exc:
                    raise PipelineError(str(exc)) from None
            self._loop()
            summary = self._summary()
            if self._on_complete:
                self._on_complete(self.metrics_url)
            return summary
        finally:
            self._kill_all()
            for server in servers:
                server.shutdown()
                server.server_close()
            if getattr(self, "_control", None) is not None:
                self._control.close()
            context.term()
            if previous_env is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous_env
            shutil.rmtree(run_dir, ignore_errors=True)

    def _ipc_parent(self) -> str | None:
        parent = self.config.transport.ipc_dir
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
            return str(parent)
        return None

    def _start_servers(self) -> list:
        servers: list = []
        cfg = self.config
        if cfg.metrics.enabled:
            from prometheus_client import start_http_server

            server, _thread = _start_server(
                servers, lambda: start_http_server(cfg.metrics.port, cfg.metrics.host, registry=self._registry),
                "metrics.port", cfg.metrics.host, cfg.metrics.port, "--metrics-port")
            self.metrics_url = f"http://{cfg.metrics.host}:{server.server_port}/metrics"
        if cfg.control.enabled:
            from pipeline.web.control_api import start_control_api

            server = _start_server(
                servers, lambda: start_control_api(self, cfg.control.host, cfg.control.port, cfg.control.token),
                "control.port", cfg.control.host, cfg.control.port, "--control-port")
            self.control_url = f"http://{cfg.control.host}:{server.server_port}"
        if cfg.live_page.enabled:
            from pipeline.web.live_page import start_live_page

            server = _start_server(
                servers, lambda: start_live_page(self, self._live_dir, cfg.live_page.host, cfg.live_page.port),
                "live_page.port", cfg.live_page.host, cfg.live_page.port, "--live-port")
            self.live_url = f"http://{cfg.live_page.host}:{server.server_port}/"
            if not is_loopback(cfg.live_page.host):
                logger.warning("the live page listens on %s: anyone who can reach it sees the camera frames",
                               cfg.live_page.host)
        return servers

    def _define_stages(self, head: HeadConfig, onnx_path: str | None, run_dir: Path) -> None:
        cfg = self.config
        base = {"control_endpoint": self._control_endpoint, "parent_pid": os.getpid(), "run_dir": str(run_dir),
                "log_level": cfg.logging.level, "high_water_mark": cfg.transport.high_water_mark}
        temporal_endpoint = f"ipc://{run_dir}/temporal"
        embed_endpoints = [f"ipc://{run_dir}/embed-{i}" for i in range(cfg.engine.workers)]
        outputs = cfg.outputs.model_dump(mode="json")
        for key in ("events_jsonl", "scores_jsonl"):
            if outputs[key]:
                outputs[key] = str(Path(outputs[key]).resolve())
        overlay_endpoint = f"ipc://{run_dir}/overlay" if self._overlay_wanted() else ""
        self._add_stage("temporal", "temporal", {
            **base, "max_batch_size": cfg.temporal.max_batch_size, "model_path": str(Path(cfg.model).resolve()),
            "temporal": cfg.temporal.model_dump(mode="json"), "events": self._events.model_dump(mode="json"),
            "outputs": outputs, "in_endpoint": temporal_endpoint, "overlay_endpoint": overlay_endpoint,
        })
        if overlay_endpoint:
            self._add_stage("overlay", "overlay", {
                **base, "classes": list(head.classes), "step_rate": head.step_rate_hz,
                "on_threshold": self._events.on_threshold, "width": cfg.overlay.width,
                "out_dir": str(Path(cfg.overlay.out_dir).resolve()) if cfg.overlay.out_dir else None,
                "live_dir": str(self._live_dir) if cfg.live_page.enabled else None,
                "keep_rotated": cfg.outputs.keep_rotated, "jpeg_quality": cfg.overlay.jpeg_quality,
                "in_endpoint": overlay_endpoint, "high_water_mark": 4 * cfg.transport.high_water_mark,
            })
        for i, endpoint in enumerate(embed_endpoints):
            self._add_stage(f"embed:{i}", "embed", {
                **base, "worker": i, "max_batch_size": cfg.engine.max_batch_size,
                "max_wait_s": cfg.engine.max_wait_ms / 1000, "backend": cfg.engine.backend, "onnx_path": onnx_path,
                "threads": cfg.engine.threads, "spinning": cfg.engine.spinning, "precision": cfg.engine.precision,
                "in_endpoint": endpoint,
                "out_endpoint": temporal_endpoint,
                "max_frames_per_s": cfg.engine.max_frames_per_s,
            })
        decoder_threads = cfg.capture.decoder_threads
        if decoder_threads is None:
            decoder_threads = decoder_threads_for(len(cfg.sources), cfg.capture.workers,
                                                  (self._machine or machine_facts()).cpu_count)
        for i in range(cfg.capture.workers):
            self._add_stage(f"capture:{i}", "capture", {
                **base, "embed_endpoints": embed_endpoints, "width": head.backbone.input_width,
                "height": head.backbone.input_height, "step_rate": head.step_rate_hz,
                "decoder_threads": decoder_threads, "decoder": cfg.capture.decoder, "gpu": cfg.capture.gpu,
                "preview_endpoint": overlay_endpoint, "preview_width": cfg.overlay.width if overlay_endpoint else 0,
            })

    def _overlay_wanted(self) -> bool:
        return self.config.overlay.out_dir is not None or self.config.live_page.enabled

    def _add_stage(self, name: str, kind: str, settings: dict) -> None:
        self._stages[name] = _Stage(name, kind, {**settings, "stage": name})

    def _capture_names(self) -> list[str]:
        return [s.name for s in self._stages.values() if s.kind == "capture" and not s.given_up]

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, stage: _Stage) -> None:
        env = dict(os.environ)
        env[MULTIPROC_ENV] = str(self._metrics_dir)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        if stage.kind == "temporal" and stage.process is not None:
            stage.settings = {**stage.settings, **self._temporal_restart_settings()}
        # Children inherit the blocked mask, so a group signal cannot kill one before it ignores them.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.stages", stage.kind], stdin=subprocess.PIPE, env=env, text=True,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            process.stdin.write(json.dumps(stage.settings))
            process.stdin.close()
        except OSError as exc:  # it died before reading them: the next check sees the exit
            logger.debug("%s did not take its settings: %s", stage.name, exc)
        stage.process = process
        stage.ready = stage.done = stage.exited = stage.drain_sent = False
        stage.failed = None
        stage.restart_at = None
        stage.last_seen = self._clock()
        logger.debug("started %s (pid %d)", stage.name, process.pid)

    def _temporal_restart_settings(self) -> dict:
        return {
            "restarted": True,
            "known_generations": {e.name: e.generation for e in self.table.active()},
            "orphaned_actions": self._open_actions,
        }

    def _kill_all(self) -> None:
        for stage in self._stages.values():
            if stage.process is not None and stage.process.poll() is None:
                stage.process.kill()
        for stage in self._stages.values():
            if stage.process is not None:
                try:
                    stage.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    logger.error("%s (pid %d) did not die on SIGKILL", stage.name, stage.process.pid)
                if not stage.exited:
                    self._reap(stage)

    def _reap(self, stage: _Stage) -> None:
        stage.exited = True
        stage.ready = False
        mark_process_dead(stage.process.pid, self._metrics_dir)

    def _send(self, stage: _Stage, message: object) -> bool:
        try:
            self._control.send_multipart([stage.name.encode(), encode(message)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # not connected (yet, or any more): the stage's Hello resends
            logger.debug("control message to %s not delivered: %s", stage.name, exc)
            return False

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while self._phase is not Phase.DONE:
            self._last_loop = now = self._clock()
            self._receive(CONTROL_POLL_S)
            self._serve_requests()
            self._check_processes(now)
            self._restart_due(now)
            self._announce_ready()
            self._advance(now)
            self._publish_snapshot()

    def _receive(self, timeout_s: float) -> None:
        if not self._control.poll(int(timeout_s * 1000)):
            return
        while True:
            try:
                identity, raw = self._control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            stage = self._stages.get(identity.decode(errors="replace"))
            if stage is None:
                continue
            try:
                message = decode(raw)
            except ControlMessageError as exc:
                logger.warning("%s sent a malformed control message: %s", stage.name, exc)
                continue
            self._on_message(stage, message)

    def _on_message(self, stage: _Stage, message: object) -> None:
        stage.last_seen = self._clock()
        if isinstance(message, Hello):
            if stage.process is None or message.pid != stage.process.pid:
                return  # a predecessor's last words
            stage.ready = True
            logger.debug("%s is up (pid %d)", stage.name, message.pid)
            self._on_stage_up(stage)
        elif isinstance(message, StreamChanged):
            entry = self.table.record(message.stream, message.generation, message.state, message.reason, message.error)
            if entry is not None:
                self._set_state_gauge(entry)
                if entry.removing and entry.finished:
                    entry.reason = "removed"
        elif isinstance(message, Heartbeat):
            if stage.kind == "capture":
                for name, info in message.streams.items():
                    self.table.progress(name, info.get("generation", -1), info.get("last_t"), self._clock())
            elif stage.kind == "temporal":
                self._open_actions = message.streams
                if failing := message.detail.get("failing_outputs"):
                    logger.debug("outputs failing: %s", failing)
        elif isinstance(message, StageDone):
            stage.done = True
            stage.result = message.detail
        elif isinstance(message, StageFailed):
            stage.failed = message
            # A fatal error is reported once, by the give-up that follows; others precede a restart.
            logger.log(logging.DEBUG if message.fatal else logging.ERROR, "%s failed: %s", stage.name, message.error)

    def _on_stage_up(self, stage: _Stage) -> None:
        if stage.kind == "capture" and self._phase >= Phase.STOPPING_CAPTURE:
            self._send(stage, StopReading())
        elif stage.kind == "embed" and self._phase >= Phase.DRAINING_EMBED:
            stage.drain_sent = self._send(stage, Drain())
        elif stage.kind == "temporal" and self._phase >= Phase.DRAINING_TEMPORAL:
            stage.drain_sent = self._send(stage, Drain())
        elif stage.kind == "overlay" and self._phase >= Phase.DRAINING_OVERLAY:
            stage.drain_sent = self._send(stage, Drain())
        self._deliver_streams()

    def _downstream_ready(self) -> bool:
        """Frames can be processed: the temporal worker and an embed worker are up.
        Streams start only then, so that the first frames do not wait for an engine to load (nor miss
        the overlay, when there is one)."""
        overlay = self._stages.get("overlay")
        # Only its first start is waited for: a restarting overlay must not hold up new streams.
        overlay_ok = overlay is None or overlay.ready or overlay.given_up or self._restarts.total.get("overlay", 0) > 0
        return (self._stages["temporal"].ready and any(s.ready for s in self._stages.values() if s.kind == "embed")
                and overlay_ok)

    def _deliver_streams(self) -> None:
        """Hand every stream not yet served by its worker's current process to that process."""
        if self._phase is not Phase.RUNNING or not self._downstream_ready():
            return
        for stage in self._stages.values():
            if stage.kind != "capture" or not stage.ready:
                continue
            for entry in self.table.served_by(stage.name):
                if not entry.delivered:
                    entry.delivered = self._send(stage, self._add_message(entry))
                    if entry.removing:
                        self._send(stage, RemoveStream(entry.name))

    def _check_processes(self, now: float) -> None:
        for stage in self._stages.values():
            if stage.process is None or stage.exited:
                continue
            code = stage.process.poll()
            if code is None:
                if stage.ready and now - stage.last_seen > HANG_AFTER_S:
                    logger.error("%s sent nothing for %.0f s: killing it", stage.name, now - stage.last_seen)
                    stage.process.kill()
                continue
            if not stage.done:
                self._receive(0.1)  # its last words (StageFailed, a last report) may still be on the way
            self._reap(stage)
            if stage.done and code == 0:
                logger.debug("%s finished", stage.name)
                continue
            self._died(stage, code, now)

    def _died(self, stage: _Stage, code: int, now: float) -> None:
        if stage.failed is not None:
            error, fatal = stage.failed.error, stage.failed.fatal
        elif code < 0:
            error, fatal = f"killed by {signal.Signals(-code).name}", False
        else:
            error, fatal = f"exit code {code}", False
        if stage.kind == "capture" and self._phase >= Phase.STOPPING_CAPTURE:
            for entry in self.table.served_by(stage.name):
                entry.state, entry.reason = StreamState.ENDED.value, "stopped"
                self._set_state_gauge(entry)
            logger.warning("%s died while stopping (%s); its streams end here", stage.name, error)
            return
        decision = self._restarts.on_exit(stage.name, now, fatal, error)
        if not decision.restart:
            self._give_up(stage, decision.reason, fatal)
            return
        stage.restart_at = now + decision.delay_s
        logger.error("%s died (%s); restarting it in %.1f s", stage.name, error, decision.delay_s)
        if stage.kind == "capture":
            moved = self.table.reassign(stage.name)
            for entry in moved:
                self._set_state_gauge(entry)
            if moved:
                logger.warning("streams %s lost their capture process: they resume in a new sequence",
                               ", ".join(e.name for e in moved))
        elif stage.kind == "embed":
            temporal = self._stages["temporal"]
            if temporal.ready:
                self._send(temporal, UpstreamLost(stage.name))
        elif stage.kind == "temporal":
            logger.warning("the temporal worker's GRU states are lost: every stream starts a new sequence")

    def _give_up(self, stage: _Stage, reason: str, fatal: bool) -> None:
        stage.given_up = True
        message = f"stage {stage.name} failed: {stage.failed.error}" if fatal and stage.failed else reason
        if stage.kind == "capture" and any(not s.given_up for s in self._stages.values() if s.kind == "capture"):
            for entry in self.table.served_by(stage.name):
                entry.state, entry.reason, entry.error = StreamState.FAILED.value, "capture_failed", message
                self._set_state_gauge(entry)
            logger.error("%s; its streams fail, the others run on", message)
            return
        if stage.kind == "embed" and any(not s.given_up for s in self._stages.values() if s.kind == "embed"):
            logger.error("%s; the other embed workers carry on", message)
            return
        if stage.kind == "overlay":
            logger.error("%s; scoring and the other outputs carry on without the overlay", message)
            return
        logger.error("%s; the pipeline cannot run without it", message)
        self._failure = message
        self._stop_now()

    def _restart_due(self, now: float) -> None:
        for stage in self._stages.values():
            if stage.restart_at is not None and now >= stage.restart_at and not stage.given_up:
                if stage.kind == "capture" and self._phase >= Phase.STOPPING_CAPTURE:
                    stage.restart_at = None
                    continue
                self._spawn(stage)

    def _announce_ready(self) -> None:
        if self._ready_announced or not all(s.ready for s in self._stages.values()):
            return
        self._ready_announced = True
        streams = len(self.table.entries())
        logger.info("pipeline running: %d stream(s), %d embed worker(s), %d capture worker(s)", streams,
                    self.config.engine.workers, self.config.capture.workers)
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
            logger.error("the drain did not finish within %.0f s (still running: %s): killing them",
                         self.config.supervision.stop_timeout_s, ", ".join(alive))
            self._failure = self._failure or f"the drain did not finish within {self.config.supervision.stop_timeout_s:g} s"
            self._stop_now()
            return
        kinds = {Phase.STOPPING_CAPTURE: "capture", Phase.DRAINING_EMBED: "embed", Phase.DRAINING_TEMPORAL: "temporal",
                 Phase.DRAINING_OVERLAY: "overlay"}
        kind = kinds[self._phase]
        pending = [s for s in self._stages.values() if s.kind == kind and not s.given_up
                   and (s.alive or s.restart_at is not None)]
        if kind == "capture":
            pending = [s for s in pending if s.alive]
        if pending:
            for stage in pending:
                if stage.kind != "capture" and stage.ready and not stage.drain_sent:
                    stage.drain_sent = self._send(stage, Drain())
            return
        self._phase = Phase(self._phase + 1)
        if self._phase is Phase.DONE:
            return
        logger.debug("drain: %s", self._phase.name.lower())

    def _begin_stop(self, now: float, why: str) -> None:
        logger.info("stopping (%s): sources stop, what was read is processed", why)
        self._phase = Phase.STOPPING_CAPTURE
        self._stop_deadline = now + self.config.supervision.stop_timeout_s
        for stage in self._stages.values():
            if stage.kind == "capture":
                stage.restart_at = None
                if stage.ready:
                    self._send(stage, StopReading())

    def _stop_now(self) -> None:
        self._kill_all()
        self.table.finish_all("stopped")
        self._phase = Phase.DONE

    # -- streams -----------------------------------------------------------------------------------
    def _add_stream(self, source: SourceConfig, from_api: bool) -> dict:
        name = stream_name(source)
        try:
            kind = classify(source.uri).kind
        except UriError as exc:
            raise StreamRequestError(str(exc)) from None
        live = source.mode == "live" or (source.mode == "auto" and kind.live)
        if from_api and kind in (SourceKind.FILE, SourceKind.FOLDER):
            _check_recorded_source(source)
        entry = self.table.add(name, source, live, self._capture_names())
        self._set_state_gauge(entry)
        self._deliver_streams()
        if from_api:
            logger.info("stream %s added (%s) on %s", name, redact(source.uri), entry.worker)
        return self._row(entry)

    def _remove_stream(self, name: str) -> dict:
        entry = self.table.mark_removing(name)
        worker = self._stages.get(entry.worker or "")
        if not entry.delivered:
            # Never handed to a capture process: nothing was read, nothing to end but the entry.
            entry.state, entry.reason = StreamState.ENDED.value, "removed"
            self._set_state_gauge(entry)
        elif worker is not None and worker.ready:
            self._send(worker, RemoveStream(name))
        logger.info("stream %s: removal requested", name)
        return self._row(entry)

    def _add_message(self, entry: StreamEntry) -> AddStream:
        cfg = self.config
        source = entry.source
        policy, open_timeout = live_settings(source, cfg.live)
        uri = source.uri
        if classify(uri).kind in (SourceKind.FILE, SourceKind.FOLDER):
            uri = str(Path(uri).resolve())  # stages need not share our working directory
        backoff = policy.backoff
        return AddStream(
            stream=entry.name, uri=uri, live=entry.live, realtime=cfg.replay.realtime or entry.live,
            loop=cfg.replay.loop, generation=entry.generation, open_timeout_s=open_timeout,
            stale_after_s=policy.stale_after_s, buffer_frames=cfg.live.buffer_frames,
            reconnect={"initial_s": backoff.initial_s, "max_s": backoff.max_s, "multiplier": backoff.multiplier,
                       "jitter": backoff.jitter, "max_attempts": policy.max_attempts},
            image_fps=source.image_fps, resume_after_t=entry.resume_after_t,
            start_t=self.table.start_time(entry, self._clock()) if entry.start_reason == "restart" else None,
            start_reason=entry.start_reason,
        )

    def _serve_requests(self) -> None:
        while True:
            try:
                fn, future = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except Exception as exc:  # handed to the API caller, who answers with it
                future.set_exception(exc)

    def _set_state_gauge(self, entry: StreamEntry) -> None:
        self._stream_states[entry.name] = entry.state

    def _metrics_state(self):
        """What the supervisor's collector exports at each scrape (read from the scrape's thread)."""
        stages_up: dict[str, int] = {}
        for stage in list(self._stages.values()):
            stages_up[stage.kind] = stages_up.get(stage.kind, 0) + (1 if stage.alive else 0)
        # Every stage's restart count, 0 included: a series that exists from the start is one alerts can see rise.
        restarts = {name: self._restarts.total.get(name, 0) for name in list(self._stages)}
        return dict(self._stream_states), restarts, stages_up, dict(self._extra_drops)

    def _row(self, entry: StreamEntry) -> dict:
        return {
            "name": entry.name, "uri": redact(entry.source.uri), "live": entry.live, "state": entry.state,
            "reason": entry.reason, "error": entry.error, "generation": entry.generation, "worker": entry.worker,
            "last_t": entry.last_t,
        }

    def _publish_snapshot(self) -> None:
        rows = [self._row(e) for e in self.table.entries()]
        with self._snapshot_lock:
            self._snapshot = rows

    @staticmethod
    def _counter_fields(counters) -> dict:
        if counters is None:
            return {"captured": 0, "sent": 0, "processed": 0, "dropped": {}, "events": 0, "reconnects": 0,
                    "sequences": {}, "overlay_frames": 0, "overlay_dropped": {}}
        return {"captured": counters.captured, "sent": counters.sent, "processed": counters.processed,
                "dropped": dict(counters.dropped), "events": counters.events, "reconnects": counters.reconnects,
                "sequences": dict(counters.sequences), "overlay_frames": counters.overlay_frames,
                "overlay_dropped": dict(counters.overlay_dropped)}

    # -- the summary -------------------------------------------------------------------------------
    def _summary(self) -> RunSummary:
        counters = read_stream_counters(self._registry)
        temporal = self._stages["temporal"].result.get("streams", {})
        summary = RunSummary(metrics_url=self.metrics_url, control_url=self.control_url,
                             interrupted=self._interrupted, failure=self._failure,
                             restarts={k: v for k, v in self._restarts.total.items() if v})
        overlay = self._stages.get("overlay")
        overlay_crashed = overlay is not None and (overlay.given_up or self._restarts.total.get("overlay", 0) > 0)
        for entry in self.table.entries():
            row = {**self._row(entry), **self._counter_fields(counters.get(entry.name))}
            downstream = sum(row["dropped"].get(r, 0) for r in DOWNSTREAM_DROP_REASONS)
            lost = row["sent"] - row["processed"] - downstream
            if lost > 0:
                # Sent, but neither scored nor counted downstream: it was inside a stage that died.
                row["dropped"]["stage_crash"] = row["dropped"].get("stage_crash", 0) + lost
                self._extra_drops[(entry.name, "stage_crash")] = lost
            if overlay_crashed:
                missing = row["processed"] - row["overlay_frames"] - sum(row["overlay_dropped"].values())
                if missing > 0:  # scored, but held by an overlay process that died
                    row["overlay_dropped"]["stage_crash"] = missing
            timing = temporal.get(entry.name, {})
            row["step_rate_hz"] = timing.get("step_rate_hz")
            row["latency_p50_s"] = timing.get("latency_p50_s")
            row["latency_p99_s"] = timing.get("latency_p99_s")
            row["first_step_wall"] = timing.get("first_step_wall")
            row["last_step_wall"] = timing.get("last_step_wall")
            summary.streams[entry.name] = row
        summary.engines = sorted({s.result.get("engine", "") for s in self._stages.values()
                                  if s.kind == "embed" and s.result.get("engine")})
        summary.exit_code = self._exit_code(summary)
        return summary

    def _exit_code(self, summary: RunSummary) -> int:
        states = [row["state"] for row in summary.streams.values()]
        failed = states.count(StreamState.FAILED.value)
        if self._failure or (states and failed == len(states)):
            return 1  # a stage could not run, or nothing worked
        if failed and not summary.interrupted:
            return 3  # finished on its own, but some streams failed
        return 0


def _check_recorded_source(source: SourceConfig) -> None:
    """An API request for a file or folder that cannot be opened is refused before anything changes."""
    from pipeline.sources.readers import SourceOpenError, open_source

    try:
        open_source(source.uri, image_fps=source.image_fps).close()
    except SourceOpenError as exc:
        raise StreamRequestError(str(exc)) from None


def _start_server(servers: list, start: Callable, setting: str, host: str, port: int, option: str):
    """Start one HTTP server and add it to ``servers``; a port that cannot be used stops the ones
    already started and is named, with the option that changes it."""
    try:
        started = start()
    except OSError as exc:
        for server in servers:
            server.shutdown()
            server.server_close()
        raise PipelineError(
            f"{setting} {port} on {host} cannot be used ({exc.strerror}): another process holds it? choose another "
            f"with {option} (0 picks a free one)"
        ) from None
    servers.append(started[0] if isinstance(started, tuple) else started)
    return started


def _check_bindable(endpoint: str, setting: str) -> None:
    context = zmq.Context.instance()
    probe = context.socket(zmq.PUB)
    probe.setsockopt(zmq.LINGER, 0)
    try:
        probe.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(f"{setting}: cannot bind {endpoint}: {exc}") from None
    finally:
        probe.close()


def install_signal_handlers(supervisor: Supervisor) -> None:
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
