"""The supervisor: starts the stages as processes, wires their ZeroMQ endpoints
(per-run ipc paths), serves one Prometheus endpoint for all of them, stops them
cleanly, and reports a per-stream summary.

Shutdown drains in stage order: captures stop reading (on SIGINT/SIGTERM, or
at the end of their files) and mark END; then the embed workers drain what is
in flight; then the temporal worker. Nothing sent is lost. A stage that fails
stops the run, which then exits non-zero.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engines.backbone import BackboneSpec
from engines.temporal_head import load_head
from pipeline.config import PipelineConfig, stream_name
from pipeline.metrics import MULTIPROC_ENV, build_registry, mark_process_dead
from pipeline.sources import is_live_uri, open_source
from pipeline.stages.capture import CaptureSettings
from pipeline.stages.embed import EmbedSettings
from pipeline.stages.entry import StageResult, capture_main, embed_main, temporal_main
from pipeline.stages.temporal import TemporalSettings

STAGE_JOIN_TIMEOUT_S = 10.0


class PipelineError(RuntimeError):
    """A stage failed or could not start; the message says which and why."""


@dataclass
class RunSummary:
    streams: dict[str, dict] = field(default_factory=dict)
    engines: list[str] = field(default_factory=list)
    metrics_url: str | None = None
    interrupted: bool = False


@dataclass
class _Stage:
    name: str
    process: mp.Process


class Supervisor:
    def __init__(
        self,
        config: PipelineConfig,
        on_ready: Callable[[str | None], None] | None = None,
        on_complete: Callable[[str | None], None] | None = None,
    ) -> None:
        self.config = config
        self._on_ready = on_ready
        # Called after every stage finished, while the metrics endpoint still serves the final counts.
        self._on_complete = on_complete
        self._ctx = mp.get_context("spawn")
        self._capture_stop = self._ctx.Event()
        self._embed_done = self._ctx.Event()  # captures are finished: embed workers drain
        self._temporal_done = self._ctx.Event()  # embed workers are finished: temporal drains
        self._abort = self._ctx.Event()  # a stage failed: everyone stops now
        self._results = self._ctx.Queue()
        self._interrupted = False
        self.metrics_url: str | None = None

    def request_stop(self, *_args) -> None:
        """SIGINT/SIGTERM: stop reading sources; what was read is still processed."""
        self._interrupted = True
        self._capture_stop.set()

    def _run_dir(self) -> Path:
        """A fresh directory for this run's ipc sockets and metric files, removed at the end."""
        parent = self.config.transport.ipc_dir
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="actionpipe-", dir=parent))

    def preflight(self) -> None:
        """Open every recorded source once, so a bad path fails before any process starts."""
        for source in self.config.sources:
            if not is_live_uri(source.uri):
                open_source(source.uri).close()

    def run(self) -> RunSummary:
        cfg = self.config
        head, _ = load_head(cfg.model)
        self.preflight()
        spec: BackboneSpec = head.config.backbone
        run_dir = self._run_dir()
        metrics_dir = run_dir / "metrics"
        metrics_dir.mkdir()
        previous_env = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)  # inherited by every stage process
        server = None
        stages: list[_Stage] = []
        try:
            if cfg.metrics.enabled:
                from prometheus_client import start_http_server

                server, _thread = start_http_server(cfg.metrics.port, cfg.metrics.host, registry=build_registry(metrics_dir))
                self.metrics_url = f"http://{cfg.metrics.host}:{server.server_port}/metrics"
            temporal_endpoint = f"ipc://{run_dir}/temporal"
            embed_endpoints = tuple(f"ipc://{run_dir}/embed-{i}" for i in range(cfg.engine.workers))
            hwm = cfg.transport.high_water_mark
            any_live = any(self._is_live(s) for s in cfg.sources)
            temporal = self._start(
                "temporal", temporal_main,
                (TemporalSettings(max_batch_size=cfg.temporal.max_batch_size), cfg.model, cfg.temporal, cfg.events,
                 cfg.outputs, temporal_endpoint, hwm, any_live, self._abort, self._temporal_done, self._results),
            )
            embeds = [
                self._start(
                    f"embed:{i}", embed_main,
                    (EmbedSettings(worker=i, max_batch_size=cfg.engine.max_batch_size, max_wait_s=cfg.engine.max_wait_ms / 1000),
                     cfg.engine.backend, cfg.engine.onnx_path, cfg.engine.threads, endpoint, temporal_endpoint, hwm,
                     self._abort, self._embed_done, self._results),
                )
                for i, endpoint in enumerate(embed_endpoints)
            ]
            captures = []
            for source in cfg.sources:
                live = self._is_live(source)
                settings = CaptureSettings(
                    stream=stream_name(source), uri=source.uri, live=live, realtime=cfg.replay.realtime,
                    loop=cfg.replay.loop, step_rate=head.config.step_rate_hz, width=spec.input_width,
                    height=spec.input_height, embed_endpoints=embed_endpoints, high_water_mark=hwm,
                )
                captures.append(self._start(f"capture:{settings.stream}", capture_main, (settings, self._capture_stop, self._results)))
            stages = [temporal, *embeds, *captures]
            if self._on_ready:
                self._on_ready(self.metrics_url)
            results = self._cascade(captures, embeds, temporal)
            summary = self._summary(results, cfg)
            if self._on_complete:
                self._on_complete(self.metrics_url)
            return summary
        finally:
            self._abort.set()
            self._capture_stop.set()
            for stage in stages:
                self._stop_process(stage)
                if stage.process.pid:
                    mark_process_dead(stage.process.pid, metrics_dir)
            if server is not None:
                server.shutdown()
            if previous_env is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous_env
            shutil.rmtree(run_dir, ignore_errors=True)

    @staticmethod
    def _is_live(source) -> bool:
        return source.mode == "live" or (source.mode == "auto" and is_live_uri(source.uri))

    def _start(self, name: str, target, args) -> _Stage:
        process = self._ctx.Process(target=target, args=args, name=name, daemon=False)
        process.start()
        return _Stage(name, process)

    def _take_result(self, results: dict[str, StageResult], timeout: float) -> None:
        """Collect one stage result if one arrives; a failed stage aborts the run."""
        try:
            result: StageResult = self._results.get(timeout=timeout)
        except queue.Empty:
            return
        results[result.stage] = result
        if not result.ok:
            raise PipelineError(f"stage {result.stage} failed: {result.error}")

    def _failure(self, stage: _Stage, results: dict[str, StageResult], what: str) -> PipelineError:
        # A stage that exited has usually queued its result just before: give it a moment.
        deadline = time.monotonic() + 1.0
        while stage.name not in results and time.monotonic() < deadline:
            self._take_result(results, timeout=0.1)
        detail = results[stage.name].error if stage.name in results else f"exit code {stage.process.exitcode}"
        return PipelineError(f"stage {stage.name} {what}: {detail}")

    def _wait(self, stages: list[_Stage], results: dict[str, StageResult], must_stay_up: list[_Stage]) -> None:
        """Wait for ``stages`` to finish with a result while ``must_stay_up`` keeps running."""
        pending = list(stages)
        while pending:
            self._take_result(results, timeout=0.2)
            for stage in must_stay_up:
                if not stage.process.is_alive():
                    raise self._failure(stage, results, "stopped while upstream stages were running")
            for stage in [s for s in pending if not s.process.is_alive()]:
                stage.process.join()
                if stage.name not in results or stage.process.exitcode != 0:
                    raise self._failure(stage, results, "failed")
                pending.remove(stage)

    def _cascade(self, captures: list[_Stage], embeds: list[_Stage], temporal: _Stage) -> dict[str, StageResult]:
        """Sources first; then each stage drains what its upstream sent before it is told to finish."""
        results: dict[str, StageResult] = {}
        self._wait(captures, results, must_stay_up=[*embeds, temporal])
        self._embed_done.set()
        self._wait(embeds, results, must_stay_up=[temporal])
        self._temporal_done.set()
        self._wait([temporal], results, must_stay_up=[])
        return results

    def _stop_process(self, stage: _Stage) -> None:
        process = stage.process
        if process.pid is None:
            return
        process.join(timeout=STAGE_JOIN_TIMEOUT_S)
        if process.is_alive():
            process.terminate()
            process.join(timeout=2.0)
        if process.is_alive():
            process.kill()
            process.join()

    def _summary(self, results: dict[str, StageResult], cfg: PipelineConfig) -> RunSummary:
        summary = RunSummary(metrics_url=self.metrics_url, interrupted=self._interrupted)
        temporal = results["temporal"].detail["streams"]
        for source in cfg.sources:
            name = stream_name(source)
            capture = results.get(f"capture:{name}")
            row = dict(temporal.get(name, {"processed": 0, "events": 0, "dropped": {}}))
            dropped = dict(row.get("dropped", {}))
            if capture:
                row["captured"] = capture.detail["captured"]
                row["sent"] = capture.detail["sent"]
                for reason, key in (("sampling", "dropped_sampling"), ("backpressure", "dropped_backpressure")):
                    if capture.detail[key]:
                        dropped[reason] = dropped.get(reason, 0) + capture.detail[key]
            row["dropped"] = dropped
            summary.streams[name] = row
        summary.engines = sorted({r.detail.get("engine", "") for k, r in results.items() if k.startswith("embed:")})
        return summary


def install_signal_handlers(supervisor: Supervisor) -> None:
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
