"""The limits of SynthActions v1 (docs/synthactions.md) and the tighter ones the planner keeps to.

Actions are planned with a little more than the spec asks (area factor >= 2.6,
brightness change >= 0.41, fully visible area in 2.2%..38%, background drift
<= 1.5% of min(W, H)/s, area <= 4%/s, brightness <= 0.04/s) so that
rasterisation never breaks the spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPEC_MIN_SIZE = (320, 240)
SPEC_MAX_SIZE = (1920, 1080)
SPEC_FPS_RANGE = (10.0, 30.0)
SPEC_BRIGHTNESS = (0.25, 1.0)
SPEC_MAX_NOISE_STD = 8.0
SPEC_ACTION_DURATION = (1.0, 3.0)
SPEC_LIGHTS_DURATION = (0.5, 2.0)
SPEC_BACKGROUND_DURATION = (1.0, 5.0)


@dataclass(frozen=True)
class SceneLimits:
    """How small and large an actor may be, how much an action must change, how fast the background drifts."""

    min_area: float  # a fully visible actor's silhouette area / frame area
    max_area: float
    min_growth: float  # area factor of an approach or a recede
    min_light_change: float  # brightness change of lights_on and lights_off
    bg_shift_per_s: float  # actor drift in the background, share of a frame side (see SPEC and PLAN)
    bg_size_per_s: float  # relative actor size drift in the background
    bg_brightness_per_s: float


# The spec's own limits; its drift is measured against the frame's width.
SPEC = SceneLimits(min_area=0.02, max_area=0.40, min_growth=2.5, min_light_change=0.4,
                   bg_shift_per_s=0.02, bg_size_per_s=0.05, bg_brightness_per_s=0.05)
# What the planner aims for: inside the spec by a margin; drift against min(W, H), never more than the width.
PLAN = SceneLimits(min_area=0.022, max_area=0.38, min_growth=2.6, min_light_change=0.41,
                   bg_shift_per_s=0.015, bg_size_per_s=0.04, bg_brightness_per_s=0.04)

FIT = 0.96  # an actor's box may use at most this share of the frame's width/height
EDGE_PX = 1.0  # inside means at least this far from every edge
MS_MARGIN = 0.0015  # seconds kept clear of every duration bound


def check_size(width: int, height: int) -> None:
    """Raises ValueError for a frame size the spec (or the mp4v encoder) does not allow."""
    if not (SPEC_MIN_SIZE[0] <= width <= SPEC_MAX_SIZE[0] and SPEC_MIN_SIZE[1] <= height <= SPEC_MAX_SIZE[1]):
        raise ValueError(f"size {width}x{height} outside 320x240..1920x1080")
    if width % 2 or height % 2:
        raise ValueError(f"size {width}x{height} must have even width and height (mp4v)")


def check_fps(fps: float) -> None:
    """Raises ValueError for a frame rate outside the spec's."""
    if not (SPEC_FPS_RANGE[0] <= fps <= SPEC_FPS_RANGE[1]) or math.isnan(fps):
        raise ValueError(f"fps {fps:g} outside 10..30")
