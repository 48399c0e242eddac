"""Drawing one annotated overlay frame: the camera frame, and beside it a panel
with the stream's name and time, the active actions, and a bar per class.

Pure: pixels in, pixels out (no I/O), so a test can check what is drawn.
The canvas has even width and height, as H.264 in 4:2:0 wants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PANEL_WIDTH = 300
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (32, 32, 32)
_TEXT = (235, 235, 235)
_MUTED = (150, 150, 150)
_BAR = (200, 140, 60)  # BGR: blue-ish bars
_BAR_ACTIVE = (60, 200, 90)  # green while the action is active
_THRESHOLD = (60, 180, 255)


@dataclass(frozen=True)
class OverlayLayout:
    """Where the panel draws each class's bar: also what a test reads the drawing back with."""

    frame_width: int
    frame_height: int
    classes: tuple[str, ...]
    panel_width: int = PANEL_WIDTH
    header_height: int = 78
    row_height: int = 26
    bar_left: int = 110
    bar_right_margin: int = 52

    @property
    def width(self) -> int:
        return _even(self.frame_width + self.panel_width)

    @property
    def height(self) -> int:
        rows = self.header_height + self.row_height * len(self.classes) + 12
        return _even(max(self.frame_height, rows))

    @property
    def bar_span(self) -> tuple[int, int]:
        """x of a bar's zero and of its full length, on the canvas."""
        left = self.frame_width + self.bar_left
        return left, self.frame_width + self.panel_width - self.bar_right_margin

    def bar_row(self, index: int) -> tuple[int, int]:
        """y range of class ``index``'s bar on the canvas."""
        top = self.header_height + index * self.row_height + 6
        return top, top + self.row_height - 10


def _even(n: int) -> int:
    return n + (n % 2)


def preview_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """A frame scaled to ``target_width`` (never up), aspect kept, both sides even."""
    if width > target_width:
        width, height = target_width, max(2, int(round(height * target_width / width)))
    return max(2, width - width % 2), max(2, height - height % 2)


def render_overlay(
    frame: np.ndarray,
    layout: OverlayLayout,
    stream: str,
    t: float,
    probs: Sequence[float],
    active: Mapping[str, float],
    on_threshold: float,
) -> np.ndarray:
    """The annotated BGR canvas ``[layout.height, layout.width, 3]`` for one scored step."""
    if len(probs) != len(layout.classes):
        raise ValueError(f"{len(probs)} probabilities for {len(layout.classes)} classes")
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = _BACKGROUND
    if frame.shape[:2] != (layout.frame_height, layout.frame_width):
        frame = cv2.resize(frame, (layout.frame_width, layout.frame_height), interpolation=cv2.INTER_AREA)
    top = (layout.height - layout.frame_height) // 2
    canvas[top:top + layout.frame_height, :layout.frame_width] = frame
    x0 = layout.frame_width + 10
    cv2.putText(canvas, _fit(stream, 24), (x0, 24), _FONT, 0.6, _TEXT, 1, cv2.LINE_AA)
    cv2.putText(canvas, f"t = {_clock(t)}", (x0, 46), _FONT, 0.5, _MUTED, 1, cv2.LINE_AA)
    now = ", ".join(sorted(active)) or "no action"
    cv2.putText(canvas, _fit(now, 34), (x0, 68), _FONT, 0.5, _BAR_ACTIVE if active else _MUTED, 1, cv2.LINE_AA)
    zero, full = layout.bar_span
    threshold_x = zero + int(round(on_threshold * (full - zero)))
    for index, (name, prob) in enumerate(zip(layout.classes, probs)):
        y0, y1 = layout.bar_row(index)
        p = float(min(1.0, max(0.0, prob)))
        colour = _BAR_ACTIVE if name in active else _BAR
        cv2.putText(canvas, _fit(name, 12), (x0, y1 - 2), _FONT, 0.45, _TEXT, 1, cv2.LINE_AA)
        cv2.rectangle(canvas, (zero, y0), (full, y1), (60, 60, 60), -1)
        if p > 0:
            cv2.rectangle(canvas, (zero, y0), (zero + int(round(p * (full - zero))), y1), colour, -1)
        cv2.line(canvas, (threshold_x, y0 - 2), (threshold_x, y1 + 2), _THRESHOLD, 1)
        cv2.putText(canvas, f"{p:.2f}", (full + 6, y1 - 2), _FONT, 0.42, _TEXT, 1, cv2.LINE_AA)
    return canvas


def _clock(t: float) -> str:
    minutes, seconds = divmod(max(0.0, t), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{seconds:05.2f}" if hours else f"{minutes:d}:{seconds:05.2f}"


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "~"
