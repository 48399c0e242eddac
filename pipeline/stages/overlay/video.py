"""An annotated overlay video per stream: H.264 in fragmented MP4, through PyAV.

Frames are stamped with their stream time, so the video plays at the
stream's pace even when the overlay dropped frames (the previous frame stays
on screen) and a viewer's clock matches the time drawn on the frame. A loop
or a reconnect that starts the stream's time again continues the video one
step later instead of going back.

Fragmented MP4 (``empty_moov`` + a fragment per keyframe) stays playable up
to the last fragment if the process is killed: nothing depends on a final
index written at close.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.errors import ActionPipeError

logger = logging.getLogger(__name__)
# A millisecond time base: stream times are kept to the millisecond.
TIME_BASE = Fraction(1, 1000)


class OverlayVideoError(ActionPipeError, RuntimeError):
    """An overlay video that cannot be opened or written; names the file."""


class StreamTimeStamps:
    """Stream time ``t`` (seconds) -> strictly increasing presentation stamps in milliseconds."""

    def __init__(self, step_s: float) -> None:
        self._step_ms = max(1, int(round(step_s * 1000)))
        self._offset_ms: int | None = None
        self._last: int | None = None

    def stamp(self, t: float) -> int:
        ms = int(round(t * 1000))
        if self._offset_ms is None:
            self._offset_ms = -ms
        pts = ms + self._offset_ms
        if self._last is not None and pts <= self._last:
            # Time went back (a loop, a reconnect): carry on one step after the last frame.
            self._offset_ms += self._last + self._step_ms - pts
            pts = self._last + self._step_ms
        self._last = pts
        return pts


class OverlayVideoWriter:
    """One stream's MP4; ``write`` takes BGR canvases of the size given at open."""

    def __init__(self, path: Path, width: int, height: int, step_s: float, crf: int = 26) -> None:
        try:
            import av
        except ImportError as exc:
            raise OverlayVideoError(f"cannot write {path}: PyAV is missing ({exc}); pip install av") from None

        if width % 2 or height % 2:
            raise OverlayVideoError(f"{path}: H.264 4:2:0 needs even sizes, got {width}x{height}")
        self.path = path
        self.width, self.height = width, height
        self.frames = 0
        self._stamps = StreamTimeStamps(step_s)
        try:
            self._container = av.open(str(path), mode="w", format="mp4",
                                      options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                               "flush_packets": "1"})
        except (OSError, av.error.FFmpegError) as exc:
            raise OverlayVideoError(f"cannot write overlay video {path}: {exc}") from None
        rate = max(1, int(round(1.0 / step_s)))
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = TIME_BASE
        # A keyframe (so a fragment) every ~2 s bounds what a crash can cost; zerolatency encodes each frame
        # as it comes (no lookahead holding frames back); veryfast keeps the encoder cheap.
        self._video.options = {"preset": "veryfast", "tune": "zerolatency", "crf": str(crf),
                               "g": str(max(2, 2 * rate))}
        self._av = av

    def write(self, canvas: np.ndarray, t: float) -> None:
        if canvas.shape != (self.height, self.width, 3):
            raise OverlayVideoError(f"{self.path}: canvas {canvas.shape} is not {self.height}x{self.width}x3")
        frame = self._av.VideoFrame.from_ndarray(canvas, format="bgr24")
        frame.pts = self._stamps.stamp(t)
        frame.time_base = TIME_BASE
        try:
            for packet in self._video.encode(frame):
                self._container.mux(packet)
        except (OSError, self._av.error.FFmpegError) as exc:
            raise OverlayVideoError(f"cannot write overlay video {self.path}: {exc}") from None
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
