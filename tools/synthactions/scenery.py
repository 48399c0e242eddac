"""A stream's actors and background drawn at random: how they look, not how they move.

Backgrounds are taken with random crop/scale/flip/hue/saturation/contrast/gamma,
still or slowly panning/zooming; photo cut-out actors come from a different
source than the background.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from tools.synthactions.geometry import actor_max_area, polygon_area, shape_polygon
from tools.synthactions.limits import PLAN
from tools.synthactions.looks import LOOKS, PATTERNS, Looks, pick_background_kind, pick_fill
from tools.synthactions.scene import ActorSpec, BackgroundSpec
from tools.synthactions.sources import PHOTO_SOURCES, VIDEO_SOURCES, clip_frame, pick_source


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random BGR colour, not too dark."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(0, 256), rng.integers(40, 256)]]], dtype=np.uint8)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return (int(bgr[0]), int(bgr[1]), int(bgr[2]))


def random_jitter(rng: np.random.Generator, strength: float = 1.0) -> tuple[float, float, float, float]:
    """Hue shift, saturation, contrast and gamma for an image, stronger with ``strength``."""
    hue = float(rng.uniform(0, 180)) if rng.random() < 0.5 * strength else 0.0
    return (
        round(hue, 3),
        round(float(rng.uniform(1 - 0.6 * strength, 1 + 0.4 * strength)), 4),
        round(float(rng.uniform(1 - 0.4 * strength, 1 + 0.3 * strength)), 4),
        round(float(np.exp(rng.uniform(-0.4, 0.4) * strength)), 4),
    )


def make_actor(rng: np.random.Generator, width: int, height: int, background_source: str = "",
               looks: Looks = LOOKS["all"]) -> ActorSpec:
    """A random actor whose fully visible area can range at least 2.6x within the limits."""
    for _ in range(100):
        shape = looks.shapes[int(rng.integers(len(looks.shapes)))]
        raw, _angle = shape_polygon(rng, shape)
        lo, hi = raw.min(0), raw.max(0)
        ext = hi - lo
        aspect = 1.0 if shape == "circle" else float(ext[0] / ext[1])
        if not 0.4 <= aspect <= 2.5:
            continue
        norm = np.round((raw - lo) / ext, 5)
        fill_ratio = round(polygon_area(norm), 6)
        fill = pick_fill(rng, looks)
        source, pattern = "", ""
        if fill == "photo":
            source = pick_source(rng, exclude=background_source)
            if not source:
                fill = "flat" if "flat" in looks.fills else looks.fills[0]
        elif fill == "texture":
            if PHOTO_SOURCES and rng.random() < 0.35:
                source = pick_source(rng, exclude=background_source, textures_only=True)
            if not source:
                pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        actor = ActorSpec(
            shape=shape,
            polygon=tuple((float(x), float(y)) for x, y in norm),
            aspect=round(aspect, 6),
            fill_ratio=fill_ratio,
            fill=fill,
            colors=tuple(random_color(rng) for _ in range(3)),
            pattern=pattern,
            source=source,
            crop=(round(float(rng.uniform(0.2, 0.8)), 4), round(float(rng.uniform(0.2, 0.8)), 4),
                  round(float(rng.uniform(0.15, 0.6)), 4)),
            jitter=random_jitter(rng, 0.7),
            angle=round(float(rng.uniform(0, math.pi)), 4),
            outline=round(float(rng.uniform(0.015, 0.05)), 4) if rng.random() < 0.25 else 0.0,
            seed=int(rng.integers(0, 2**31 - 1)),
        )
        if actor_max_area(actor, width, height) >= PLAN.min_area * PLAN.min_growth * 1.3:
            return actor
    raise RuntimeError(f"could not make an actor that fits a {width}x{height} frame")


def make_background(rng: np.random.Generator, width: int, height: int, looks: Looks = LOOKS["all"]) -> BackgroundSpec:
    """A random background of a kind these looks allow, with its motion (still, panning, zooming)."""
    kind = pick_background_kind(rng, looks)
    source, pattern = "", ""
    if kind == "photo":
        source = pick_source(rng)
        for _ in range(20):
            if ":" not in source or "video" in looks.backgrounds:
                break
            source = pick_source(rng)  # a frame of a video clip, whose kind these looks exclude: another
        if ":" in source:
            if "video" in looks.backgrounds:
                kind = "video"
            else:
                kind, source = "texture", ""
    elif kind == "video":
        clips = list(VIDEO_SOURCES)
        if clips:
            source = clip_frame(rng, clips[int(rng.integers(len(clips)))])
        else:
            source = pick_source(rng)
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
        jitter=random_jitter(rng, 1.0),
        colors=tuple(random_color(rng) for _ in range(3)),
        pattern=pattern,
        angle=round(float(rng.uniform(0, math.pi)), 4),
        blur=round(float(rng.uniform(0.5, 3.0)), 3) if rng.random() < 0.15 else 0.0,
        pan=pan,  # type: ignore[arg-type]
        zoom=zoom,
        seed=int(rng.integers(0, 2**31 - 1)),
    )
