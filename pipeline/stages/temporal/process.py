"""The temporal process: the head on its device, the state table, the reorder windows, the event
detector, the outputs and the overlay feed; then the worker until it is drained."""

from __future__ import annotations

import zmq

from engines.base import EngineUnavailableError
from engines.temporal_head import load_head
from pipeline.events import ActionEventDetector
from pipeline.metrics import StageMetrics
from pipeline.outputs import build
from pipeline.outputs.sinks import SinkFanOut
from pipeline.stages.loop import StageLoop
from pipeline.stages.overlay.feed import OverlayFeedSink
from pipeline.stages.settings import TemporalSettings
from pipeline.stages.temporal.reorder import ReorderBuffer
from pipeline.stages.temporal.restoring import StreamRestorer
from pipeline.stages.temporal.snapshots import SnapshotWriter, StreamSnapshots
from pipeline.stages.temporal.state_table import StreamStateTable
from pipeline.stages.temporal.worker import TemporalWorker
from pipeline.transport import sockets
from pipeline.transport.control import ParentWatch, StageLink


def serve(settings: TemporalSettings, link: StageLink, parent: ParentWatch, context: zmq.Context) -> dict:
    import torch

    cfg = settings.temporal
    torch.set_num_threads(cfg.threads)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailableError("temporal.device is cuda, but CUDA is not available here")
    head, _ = load_head(settings.model_path, device=cfg.device)
    classes = head.config.classes
    metrics = StageMetrics.create()
    table = StreamStateTable(head, cfg.capacity, cfg.idle_timeout_s, device=cfg.device)
    table.warm_up(min(cfg.max_batch_size, cfg.capacity))  # before Hello: no stream waits for it
    live_reorder = ReorderBuffer(cfg.reorder_window, cfg.reorder_timeout_s, first_seq=0)
    replay_reorder = ReorderBuffer(cfg.replay_reorder_window, cfg.replay_reorder_timeout_s, first_seq=0)
    detector = ActionEventDetector(classes, settings.events.hysteresis())
    embeddings = sockets.embeddings_in(context, settings.in_endpoint, settings.high_water_mark)
    event_sinks = build.event_sinks(settings.outputs, context, metrics)
    score_sinks = build.score_sinks(settings.outputs)
    overlay = sockets.overlay_out(context, settings.overlay_endpoint, settings.high_water_mark)
    if overlay is not None:
        feed = OverlayFeedSink(overlay, classes, metrics)
        event_sinks.append(feed)
        score_sinks.append(feed)
    events = SinkFanOut(event_sinks, metrics)
    scores = SinkFanOut(score_sinks, metrics) if score_sinks else None
    snapshots, restorer = durable_state(settings, head, table, metrics)
    try:
        worker = TemporalWorker(settings, table, replay_reorder, detector, embeddings, events, scores, classes,
                                metrics, live_reorder=live_reorder, snapshots=snapshots, restorer=restorer)
        summary = worker.run(StageLoop(settings.stage, link, parent, settings.drain_idle_s), report=link.send)
    finally:
        if scores is not None:
            scores.close()
        events.close()
        sockets.close([embeddings], orphaned=not parent.parent_alive())
    return {"streams": summary}


def durable_state(settings: TemporalSettings, head, table: StreamStateTable,
                  metrics) -> tuple[StreamSnapshots | None, StreamRestorer | None]:
    """The snapshot taker (its writer thread started) and the restorer, over the store the supervisor
    chose; the identities are computed here, once (the backbone's reads its graph: most of a second)."""
    import time

    from pipeline.state.identity import head_identity
    from pipeline.state.store import DirectoryStore, SharedDirectoryStore

    if not settings.state_folder:
        return None, None
    # The writer fsyncs a drained stop's (and a move's), if durable.
    store = (SharedDirectoryStore if settings.state.shared else DirectoryStore)(settings.state_folder, fsync=False)
    head_id, backbone_id = head_identity(head), backbone_identity_for(settings.onnx_path, head.config.backbone)
    restorer = StreamRestorer(store, head_id, backbone_id, settings.state.max_age_s, table.row_shape, metrics)
    snapshots = StreamSnapshots(SnapshotWriter(store, metrics, durable=settings.state_fsync), head_id, backbone_id,
                                settings.state.snapshot_interval_s, time.monotonic())
    return snapshots, restorer


def backbone_identity_for(onnx_path: str | None, spec) -> str:
    """The identity of the backbone the embed workers run: their ONNX graph, or (the PyTorch backends)
    our export of the pretrained weights, which that graph would be."""
    from engines.backbone import EXPORT_REVISION
    from engines.efficientnet_lite import pretrained_weights_path
    from engines.spec import file_sha256
    from pipeline.state.identity import backbone_identity, backbone_identity_of_onnx

    if onnx_path:
        return backbone_identity_of_onnx(onnx_path, spec)
    return backbone_identity(spec, file_sha256(pretrained_weights_path()), EXPORT_REVISION)
