"""The capture process: its sockets and metrics, then the stage until it finishes."""

from __future__ import annotations

import zmq

from pipeline.metrics import StageMetrics
from pipeline.stages.capture.stage import CaptureStage
from pipeline.stages.loop import StageLoop
from pipeline.stages.settings import CaptureSettings
from pipeline.transport import sockets
from pipeline.transport.control import ParentWatch, StageLink


def serve(settings: CaptureSettings, link: StageLink, parent: ParentWatch, context: zmq.Context) -> dict:
    frames = sockets.frames_out(context, settings.embed_endpoints, settings.high_water_mark)
    link.hold_open(frames)
    previews = sockets.overlay_out(context, settings.preview_endpoint, settings.high_water_mark)
    try:
        stage = CaptureStage(settings, frames, StageMetrics.create(), preview_socket=previews, report=link.send)
        return stage.run(StageLoop(settings.stage, link, parent, drain_idle_s=0.0))
    finally:
        # The frames socket stays open until the supervisor releases this process (link.hold_open).
        sockets.close([previews], orphaned=not parent.parent_alive())
