"""What a stream is made of: its actors and background, its timeline of segments, and each frame's truth.

Frame-aligned timeline: every segment covers whole frames. An action over
frames ``i0 .. i1-1`` is annotated ``(i0 - 0.5)/fps .. (i1 - 0.5)/fps``
(rounded to the millisecond), i.e. boundaries sit half-way between frames,
so a consumer that computes frame times with a slightly different fps still
labels every frame the way the renderer did. The motion of an action runs
from its start state on its first frame to its end state on its last frame,
so the frames labelled with a class show the whole required change.

Scene state is a (actor, centre, area, brightness) tuple; the actor's
silhouette is a polygon in its own tight unit box, so its area and whether it
is fully inside, partly outside or fully outside the frame are exact at plan
time.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

from tools.evaluation.annotations import BACKGROUND, ActionInstance
from tools.synthactions.curves import curve_value


@dataclass(frozen=True)
class ActorSpec:
    """One actor's look. ``polygon`` is its silhouette in its tight unit box."""

    shape: str
    polygon: tuple[tuple[float, float], ...]
    aspect: float  # box width / box height
    fill_ratio: float  # silhouette area / box area
    fill: str
    colors: tuple[tuple[int, int, int], ...]  # BGR
    pattern: str
    source: str
    crop: tuple[float, float, float]  # centre x, centre y (0..1), scale (0..1]
    jitter: tuple[float, float, float, float]  # hue shift, saturation, contrast, gamma
    angle: float
    outline: float  # outline thickness as a share of the box's short side; 0 for none
    seed: int


@dataclass(frozen=True)
class BackgroundSpec:
    kind: str
    source: str
    crop: tuple[float, float, float]
    flip_x: bool
    flip_y: bool
    jitter: tuple[float, float, float, float]  # hue shift, saturation, contrast, gamma
    colors: tuple[tuple[int, int, int], ...]
    pattern: str
    angle: float
    blur: float
    pan: tuple[float, float, float, float, float, float]  # amp x, amp y (px), period x, y (s), phase x, y
    zoom: tuple[float, float, float]  # amplitude (relative), period (s), phase
    seed: int

    @property
    def still(self) -> bool:
        return self.pan[0] == 0.0 and self.pan[1] == 0.0 and self.zoom[0] == 0.0


@dataclass(frozen=True)
class Segment:
    """Frames ``start .. end-1`` of one label. Actor state is centre (px) and
    area (silhouette area / frame area, as if fully visible)."""

    label: str
    start: int
    end: int
    actor: int  # index into StreamPlan.actors, -1 for none
    cx0: float
    cy0: float
    area0: float
    cx1: float
    cy1: float
    area1: float
    b0: float
    b1: float
    curve: str = "linear"
    curve_params: tuple[float, float] = (1.0, 0.5)

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SceneState:
    actor: int
    cx: float
    cy: float
    area: float
    brightness: float
    label: str


@dataclass(frozen=True)
class StreamPlan:
    video_id: str
    width: int
    height: int
    fps: float
    n_frames: int
    seed: int
    segments: tuple[Segment, ...]
    actors: tuple[ActorSpec, ...]
    background: BackgroundSpec
    noise_std: float
    noise_color: bool

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    def boundary_ms(self, frame: int) -> int:
        """Annotated time (ms) of the boundary just before ``frame``."""
        return boundary_ms(frame, self.fps)

    def instances(self) -> list[ActionInstance]:
        return [
            ActionInstance(self.video_id, s.label, self.boundary_ms(s.start) / 1000.0, self.boundary_ms(s.end) / 1000.0)
            for s in self.segments
            if s.label != BACKGROUND
        ]

    def segment_index(self, frame: int) -> int:
        starts = [s.start for s in self.segments]
        return bisect_right(starts, frame) - 1

    def state_at(self, frame: int) -> SceneState:
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} outside 0..{self.n_frames - 1}")
        return segment_state(self.segments[self.segment_index(frame)], frame)

    def actor_box(self, actor: int, cx: float, cy: float, area: float) -> tuple[float, float, float, float]:
        w, h = actor_dims(self.actors[actor], area, self.width, self.height)
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


@dataclass(frozen=True)
class FrameTruth:
    t: float
    actor_area_fraction: float  # visible silhouette area / frame area (rendered alpha)
    actor_fully_inside: bool
    actor_present: bool
    brightness: float
    label: str
    actor_box: tuple[float, float, float, float] | None = None  # full silhouette box in px, may leave the frame


def boundary_ms(frame: int, fps: float) -> int:
    """Annotated time (ms) of the boundary just before ``frame``: half-way between it and the one before."""
    return int(round((frame - 0.5) * 1000.0 / fps))


def segment_state(seg: Segment, frame: int) -> SceneState:
    """The scene at ``frame`` of the segment that covers it."""
    n = seg.end - seg.start
    if seg.label == BACKGROUND:
        p = (frame - seg.start) / n
        area = seg.area0 * (seg.area1 / seg.area0) ** p if seg.actor >= 0 else 0.0
        cx = seg.cx0 + (seg.cx1 - seg.cx0) * p
        cy = seg.cy0 + (seg.cy1 - seg.cy0) * p
        b = seg.b0 + (seg.b1 - seg.b0) * p
        return SceneState(seg.actor, cx, cy, area, b, seg.label)
    p = curve_value(seg.curve, seg.curve_params, (frame - seg.start) / (n - 1) if n > 1 else 1.0)
    cx, cy, area, b = seg.cx0, seg.cy0, seg.area0, seg.b0
    if seg.label in ("approach", "recede"):
        area = seg.area0 * (seg.area1 / seg.area0) ** p
        s0, s1 = math.sqrt(seg.area0), math.sqrt(seg.area1)
        u = (math.sqrt(area) - s0) / (s1 - s0)
        cx = seg.cx0 + (seg.cx1 - seg.cx0) * u
        cy = seg.cy0 + (seg.cy1 - seg.cy0) * u
    elif seg.label in ("enter", "exit"):
        cx = seg.cx0 + (seg.cx1 - seg.cx0) * p
        cy = seg.cy0 + (seg.cy1 - seg.cy0) * p
    else:
        b = seg.b0 + (seg.b1 - seg.b0) * p
    return SceneState(seg.actor, cx, cy, area, b, seg.label)


def actor_dims(actor: ActorSpec, area: float, width: int, height: int) -> tuple[float, float]:
    """Width and height (px) of the actor's box when its silhouette covers ``area`` of the frame."""
    box_px = area * width * height / actor.fill_ratio
    return math.sqrt(box_px * actor.aspect), math.sqrt(box_px / actor.aspect)
