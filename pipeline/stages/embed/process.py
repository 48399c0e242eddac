"""An embed process: its engine, sockets and metrics, then the worker until it is drained."""

from __future__ import annotations

import logging
from pathlib import Path

import zmq

from engines.factory import create_engine
from pipeline.metrics import StageMetrics
from pipeline.stages.embed.worker import EmbedWorker, default_batch_size
from pipeline.stages.loop import StageLoop
from pipeline.stages.settings import EmbedSettings
from pipeline.transport import sockets
from pipeline.transport.control import ParentWatch, StageLink

logger = logging.getLogger(__name__)


def serve(settings: EmbedSettings, link: StageLink, parent: ParentWatch, context: zmq.Context) -> dict:
    cfg = settings.engine
    engine = create_engine(cfg.backend, onnx_path=Path(settings.onnx_path) if settings.onnx_path else None,
                           threads=cfg.threads, spinning=cfg.spinning, precision=cfg.precision,
                           max_batch_size=cfg.max_batch_size or 32)
    logger.info("%s: engine %s, batches of up to %s frames", settings.stage, engine.name,
                cfg.max_batch_size or f"{default_batch_size(engine.name)} (its default)")
    frames = sockets.frames_in(context, settings.in_endpoint, settings.high_water_mark)
    embeddings = sockets.embeddings_out(context, settings.out_endpoint, settings.high_water_mark)
    link.hold_open(embeddings)
    try:
        worker = EmbedWorker(settings, engine, frames, embeddings, StageMetrics.create())
        tally = worker.run(StageLoop(settings.stage, link, parent, settings.drain_idle_s))
    finally:
        # The embeddings socket stays open until the supervisor releases this process (link.hold_open).
        sockets.close([frames], orphaned=not parent.parent_alive())
        engine.close()
    return {"worker": settings.worker, "engine": engine.name, **tally.__dict__}
