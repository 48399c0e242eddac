"""Stage process entry points: each builds its stage's sockets, engine and metrics
inside its own process, runs it, and reports the result (or its error) to the
supervisor over the control channel.

Every stage process:

* ignores SIGINT and SIGTERM (the supervisor decides how to stop, so a
  signal to the whole process group drains like one to the supervisor);
* watches its parent and exits within a second when the supervisor is gone;
* imports only what its stage uses: a capture process never loads PyTorch
  or an inference runtime.

Exit status: 0 after ``StageDone``; 1 after ``StageFailed`` (``fatal`` when
a restart would fail the same way, such as an engine this machine cannot
run); 2 for a malformed start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable

logger = logging.getLogger(__name__)

STAGE_KINDS = ("capture", "embed", "temporal", "overlay")
OVERLAY_LINGER_MS = 1000


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The supervisor starts us with these blocked, so no signal lands before we ignore them.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors about the user's input or machine: a restart would meet them again."""
    from engines.base import EngineError
    from engines.head_config import CheckpointError

    return (EngineError, CheckpointError, FileNotFoundError, PermissionError)


def main(argv: list[str]) -> int:
    _ignore_stop_signals()
    if len(argv) != 1 or argv[0] not in STAGE_KINDS:
        print(f"usage: python -m pipeline.stages {{{','.join(STAGE_KINDS)}}} < settings.json", file=sys.stderr)
        return 2
    kind = argv[0]
    if kind == "capture":
        # Our own messages name the stream and say what to do; FFmpeg's and OpenCV's own would only repeat
        # them (and may print a URL). Set before cv2 is first imported.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    settings = json.loads(sys.stdin.read())
    stage = settings["stage"]
    from pipeline.logs import setup_logging

    setup_logging(settings.get("log_level", "info"), stage)
    import zmq

    from pipeline.transport.control import ParentWatch, StageDone, StageFailed, StageLink

    context = zmq.Context()
    link = StageLink(context, settings["control_endpoint"], stage)
    parent = ParentWatch(settings["parent_pid"])
    runner: Callable[[dict, object, object, zmq.Context], dict] = {
        "capture": _run_capture, "embed": _run_embed, "temporal": _run_temporal, "overlay": _run_overlay,
    }[kind]
    code = 0
    try:
        detail = runner(settings, link, parent, context)
        link.send(StageDone(stage, detail))
    except Exception as exc:  # reported to the supervisor, which restarts the stage or ends the run
        fatal = isinstance(exc, _fatal_errors())
        link.send(StageFailed(stage, f"{type(exc).__name__}: {exc}", fatal))
        if not fatal:
            traceback.print_exc(file=sys.stderr)  # a bug or a machine fault: keep the trace
        code = 1
    finally:
        orphaned = not parent.parent_alive()
        # With the supervisor gone nobody is left to drain to: drop what is queued rather than wait on it.
        link.close(linger=0 if orphaned else None)
        context.term()
        if orphaned and settings.get("run_dir"):
            # The supervisor was killed and cannot clean up: the last stage out removes the run's sockets.
            import shutil

            shutil.rmtree(settings.get("run_dir", ""), ignore_errors=True)
    return code


def _run_capture(settings: dict, link, parent, context) -> dict:
    import zmq

    from pipeline.metrics import StageMetrics
    from pipeline.stages.capture.stage import CaptureSettings, CaptureStage

    s = CaptureSettings(
        stage=settings["stage"], control_endpoint=settings["control_endpoint"],
        embed_endpoints=tuple(settings["embed_endpoints"]), high_water_mark=settings["high_water_mark"],
        width=settings["width"], height=settings["height"], step_rate=settings["step_rate"],
        parent_pid=settings["parent_pid"], decoder_threads=settings.get("decoder_threads", 1),
        decoder=settings.get("decoder", "opencv"), gpu=settings.get("gpu", 0),
        preview_endpoint=settings.get("preview_endpoint", ""), preview_width=settings.get("preview_width", 0),
    )
    preview = _overlay_socket(context, s.preview_endpoint, 4 * s.high_water_mark)
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, s.high_water_mark)
    # What was sent must reach the embed workers even as this process exits; a dead peer cannot
    # keep it alive past the supervisor's stop deadline, which kills what is left.
    socket.setsockopt(zmq.LINGER, -1)
    for endpoint in s.embed_endpoints:
        socket.connect(endpoint)
    try:
        return CaptureStage(s, link, socket, StageMetrics.create(), parent, preview_socket=preview).run()
    finally:
        socket.close(linger=None if parent.parent_alive() else 0)
        if preview is not None:
            preview.close(linger=None if parent.parent_alive() else 0)


def _overlay_socket(context, endpoint: str, high_water_mark: int):
    """A PUSH socket to the overlay stage, or None without one. Sends to it never wait (NOBLOCK):
    with the overlay behind or down, the queue fills and what does not fit is let go."""
    if not endpoint:
        return None
    import zmq

    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, high_water_mark)
    # At exit what is queued still goes, for a bounded time: a dead overlay must not hold up a stop.
    socket.setsockopt(zmq.LINGER, OVERLAY_LINGER_MS)
    socket.connect(endpoint)
    return socket


def _run_embed(settings: dict, link, parent, context) -> dict:
    import zmq

    from engines.factory import create_engine
    from pipeline.metrics import StageMetrics
    from pipeline.stages.embed.worker import EmbedSettings, EmbedWorker, default_batch_size

    s = EmbedSettings(**{k: v for k, v in settings.items() if k in EmbedSettings.__dataclass_fields__})
    engine = create_engine(s.backend, onnx_path=s.onnx, threads=s.threads, spinning=s.spinning,
                           precision=s.precision, max_batch_size=s.max_batch_size or 32)
    logger.info("%s: engine %s, batches of up to %s frames", s.stage, engine.name,
                s.max_batch_size or f"{default_batch_size(engine.name)} (its default)")
    frames_in = context.socket(zmq.PULL)
    frames_in.setsockopt(zmq.RCVHWM, s.high_water_mark)
    frames_in.bind(s.in_endpoint)
    out = context.socket(zmq.PUSH)
    out.setsockopt(zmq.SNDHWM, s.high_water_mark * 4)
    out.setsockopt(zmq.LINGER, -1)
    out.connect(s.out_endpoint)
    try:
        tally = EmbedWorker(s, engine, frames_in, out, StageMetrics.create()).run(link, parent)
    finally:
        linger = None if parent.parent_alive() else 0
        frames_in.close(linger=linger)
        out.close(linger=linger)
        engine.close()
    return {"worker": s.worker, "engine": engine.name, **tally.__dict__}


def _webhook_transport(cfg):
    from pipeline.outputs.webhook import WebhookTransport

    return WebhookTransport(cfg.url, cfg.timeout_s)


def _mqtt_transport(cfg):
    from pipeline.outputs.mqtt import MqttTransport

    return MqttTransport(cfg.host, cfg.port, cfg.topic_prefix, cfg.client_id, cfg.username, cfg.password)


def _network_sink(transport, cfg, metrics):
    """A webhook or MQTT output on its own thread, so it never holds up scoring."""
    from pipeline.backoff import Backoff
    from pipeline.outputs.delivery import DROP_REASONS, BackgroundSink, DropReport

    def count(report: DropReport) -> None:
        metrics.sink_dropped.labels(report.sink, report.reason).inc(report.count)

    for reason in DROP_REASONS:  # each exists from the start (0), for dashboards and alerts
        metrics.sink_dropped.labels(transport.name, reason)

    return BackgroundSink(transport, capacity=cfg.buffer,
                          backoff=Backoff(initial_s=min(0.5, cfg.retry_max_s), max_s=cfg.retry_max_s),
                          on_drop=count, flush_timeout_s=cfg.flush_timeout_s)


def _run_overlay(settings: dict, link, parent, context) -> dict:
    import zmq

    from pipeline.metrics import StageMetrics
    from pipeline.stages.overlay.stage import OverlaySettings, OverlayStage

    s = OverlaySettings(**{k: (tuple(v) if k == "classes" else v) for k, v in settings.items()
                           if k in OverlaySettings.__dataclass_fields__})
    frames_in = context.socket(zmq.PULL)
    frames_in.setsockopt(zmq.RCVHWM, s.high_water_mark)
    frames_in.bind(s.in_endpoint)
    try:
        return OverlayStage(s, frames_in, StageMetrics.create()).run(link, parent)
    finally:
        frames_in.close(linger=0)


def _run_temporal(settings: dict, link, parent, context) -> dict:
    import zmq

    from engines.temporal_head import load_head
    from pipeline.config import EventsConfig, OutputsConfig, TemporalConfig
    from pipeline.events import ActionEventDetector
    from pipeline.metrics import StageMetrics
    from pipeline.stages.temporal.reorder import ReorderBuffer
    from pipeline.outputs.sinks import JsonlEventSink, JsonlScoreSink, PubEventSink, SinkFanOut, StdoutEventSink
    from pipeline.stages.temporal.worker import TemporalSettings, TemporalWorker
    from pipeline.stages.temporal.state_table import StreamStateTable

    s = TemporalSettings(**{k: v for k, v in settings.items() if k in TemporalSettings.__dataclass_fields__})
    temporal_cfg = TemporalConfig(**s.temporal)
    events_cfg = EventsConfig(**s.events)
    outputs_cfg = OutputsConfig(**s.outputs)
    metrics = StageMetrics.create()
    import torch

    from engines.base import EngineUnavailableError

    torch.set_num_threads(temporal_cfg.threads)
    if temporal_cfg.device == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailableError("temporal.device is cuda, but CUDA is not available here")
    head, _ = load_head(s.model_path, device=temporal_cfg.device)
    classes = head.config.classes
    table = StreamStateTable(head, temporal_cfg.capacity, temporal_cfg.idle_timeout_s, device=temporal_cfg.device)
    live_reorder = ReorderBuffer(temporal_cfg.reorder_window, temporal_cfg.reorder_timeout_s, first_seq=0)
    replay_reorder = ReorderBuffer(temporal_cfg.replay_reorder_window, temporal_cfg.replay_reorder_timeout_s, first_seq=0)
    detector = ActionEventDetector(classes, events_cfg.hysteresis())
    embeddings_in = context.socket(zmq.PULL)
    embeddings_in.setsockopt(zmq.RCVHWM, s.high_water_mark * 4)
    embeddings_in.bind(s.in_endpoint)
    event_sinks = []
    if outputs_cfg.stdout:
        event_sinks.append(StdoutEventSink(sys.stdout))
    if outputs_cfg.events_jsonl:
        event_sinks.append(JsonlEventSink(outputs_cfg.events_jsonl))
    if outputs_cfg.events_pub:
        event_sinks.append(PubEventSink(outputs_cfg.events_pub, context))
    if outputs_cfg.webhook:
        event_sinks.append(_network_sink(_webhook_transport(outputs_cfg.webhook), outputs_cfg.webhook, metrics))
    if outputs_cfg.mqtt:
        event_sinks.append(_network_sink(_mqtt_transport(outputs_cfg.mqtt), outputs_cfg.mqtt, metrics))
    score_sinks = [JsonlScoreSink(outputs_cfg.scores_jsonl)] if outputs_cfg.scores_jsonl else []
    if s.overlay_endpoint:
        from pipeline.stages.overlay.feed import OverlayFeedSink

        overlay = OverlayFeedSink(_overlay_socket(context, s.overlay_endpoint, 4 * s.high_water_mark), classes, metrics)
        event_sinks.append(overlay)
        score_sinks.append(overlay)
    events = SinkFanOut(event_sinks, metrics)
    scores = SinkFanOut(score_sinks, metrics) if score_sinks else None
    try:
        worker = TemporalWorker(s, table, replay_reorder, detector, embeddings_in, events, scores, classes, metrics,
                                live_reorder=live_reorder)
        summary = worker.run(link, parent)
    finally:
        if scores is not None:
            scores.close()
        events.close()
        embeddings_in.close(linger=None if parent.parent_alive() else 0)
    return {"streams": summary}
