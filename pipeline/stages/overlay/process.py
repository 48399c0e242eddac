"""The overlay process: its socket and metrics, then the stage until it is drained."""

from __future__ import annotations

import zmq

from pipeline.metrics import StageMetrics
from pipeline.stages.loop import StageLoop
from pipeline.stages.overlay.stage import OverlayStage
from pipeline.stages.settings import OverlaySettings
from pipeline.transport import sockets
from pipeline.transport.control import ParentWatch, StageLink


def serve(settings: OverlaySettings, link: StageLink, parent: ParentWatch, context: zmq.Context) -> dict:
    feed = sockets.overlay_in(context, settings.in_endpoint, settings.high_water_mark)
    try:
        stage = OverlayStage(settings, feed, StageMetrics.create())
        return stage.run(StageLoop(settings.stage, link, parent, settings.drain_idle_s))
    finally:
        feed.close(linger=0)  # a PULL socket: nothing of ours waits in it
