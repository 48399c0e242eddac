"""Process entry points: each builds its stage's sockets, engine and metrics
inside its own process, runs it, and reports a result (or its error) to the
supervisor. Nothing heavy is inherited: stages start with the spawn method.
"""

from __future__ import annotations

import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import zmq


@dataclass(frozen=True)
class StageResult:
    stage: str
    ok: bool
    detail: dict
    error: str = ""


def _report(results, stage: str, fn) -> None:
    # Ctrl-C reaches the whole process group; the supervisor alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        detail = fn()
        results.put(StageResult(stage, True, detail))
    except Exception as exc:  # reported to the supervisor, which exits non-zero
        results.put(StageResult(stage, False, {}, f"{type(exc).__name__}: {exc}"))
        if not isinstance(exc, _expected_errors()):
            traceback.print_exc(file=sys.stderr)  # a bug: keep the trace


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors about the user's input or machine: the supervisor's one line says it all."""
    from engines.base import EngineError
    from engines.temporal_head import CheckpointError
    from pipeline.sources import SourceError

    return (EngineError, CheckpointError, SourceError)


def capture_main(settings, stop, results) -> None:
    from pipeline.metrics import StageMetrics
    from pipeline.stages.capture import CaptureWorker

    def work() -> dict:
        context = zmq.Context()
        socket = context.socket(zmq.PUSH)
        socket.setsockopt(zmq.SNDHWM, settings.high_water_mark)
        socket.setsockopt(zmq.LINGER, -1)  # never drop what was sent when this process exits
        for endpoint in settings.embed_endpoints:
            socket.connect(endpoint)
        try:
            tally = CaptureWorker(settings, socket, stop, StageMetrics.create()).run()
        finally:
            socket.close()
            context.term()
        return {"stream": settings.stream, **tally.__dict__}

    _report(results, f"capture:{settings.stream}", work)


def embed_main(settings, engine_backend: str, onnx_path: Path | None, threads: int, in_endpoint: str,
               out_endpoint: str, high_water_mark: int, stop, upstream_done, results) -> None:
    from engines.factory import create_engine
    from pipeline.metrics import StageMetrics
    from pipeline.stages.embed import EmbedWorker

    def work() -> dict:
        engine = create_engine(engine_backend, onnx_path=onnx_path, threads=threads)
        context = zmq.Context()
        frames_in = context.socket(zmq.PULL)
        frames_in.setsockopt(zmq.RCVHWM, high_water_mark)
        frames_in.bind(in_endpoint)
        out = context.socket(zmq.PUSH)
        out.setsockopt(zmq.SNDHWM, high_water_mark * 4)
        out.setsockopt(zmq.LINGER, -1)
        out.connect(out_endpoint)
        try:
            tally = EmbedWorker(settings, engine, frames_in, out, StageMetrics.create()).run(stop, upstream_done)
        finally:
            frames_in.close()
            out.close()
            context.term()
            engine.close()
        return {"worker": settings.worker, "engine": engine.name, **tally.__dict__}

    _report(results, f"embed:{settings.worker}", work)


def temporal_main(settings, model_path: Path, temporal_cfg, events_cfg, outputs_cfg, in_endpoint: str,
                  high_water_mark: int, any_live: bool, stop, upstream_done, results) -> None:
    from engines.temporal_head import load_head
    from pipeline.events import ActionEventDetector
    from pipeline.metrics import StageMetrics
    from pipeline.reorder import ReorderBuffer
    from pipeline.sinks import EventSinks, ScoreSink
    from pipeline.stages.temporal import TemporalWorker
    from pipeline.state_table import StreamStateTable

    def work() -> dict:
        head, _ = load_head(model_path)
        classes = head.config.classes
        table = StreamStateTable(head, temporal_cfg.capacity, temporal_cfg.idle_timeout_s)
        if any_live:
            reorder = ReorderBuffer(temporal_cfg.reorder_window, temporal_cfg.reorder_timeout_s, first_seq=0)
        else:
            reorder = ReorderBuffer(temporal_cfg.replay_reorder_window, temporal_cfg.replay_reorder_timeout_s, first_seq=0)
        detector = ActionEventDetector(classes, events_cfg.hysteresis())
        context = zmq.Context()
        embeddings_in = context.socket(zmq.PULL)
        embeddings_in.setsockopt(zmq.RCVHWM, high_water_mark * 4)
        embeddings_in.bind(in_endpoint)
        sinks = EventSinks(
            stdout=sys.stdout if outputs_cfg.stdout else None,
            jsonl_path=outputs_cfg.events_jsonl,
            pub_endpoint=outputs_cfg.events_pub,
            context=context,
        )
        scores = ScoreSink(outputs_cfg.scores_jsonl)
        try:
            worker = TemporalWorker(settings, table, reorder, detector, embeddings_in, sinks, scores, classes,
                                    StageMetrics.create())
            summary = worker.run(stop, upstream_done)
        finally:
            scores.close()
            sinks.close()
            embeddings_in.close()
            context.term()
        return {"streams": summary}

    _report(results, "temporal", work)
