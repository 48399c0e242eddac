"""Rendering a plan: frames and their truth, deterministic per seed, and mp4 files of them.

A frame only depends on the plan and its index. Sensor noise std is uniform
in 0..8 per stream (colour or luma), fresh per frame; brightness multiplies
the whole frame before noise; an actor's fill has its mean colour pushed away
from the background's.

Speed. The background canvas, actor sprite pyramids and a noise bank are
built once per stream; a frame is one warpAffine (or copy) of the canvas,
two small warpAffines + one blendLinear for the actor, and one addWeighted
for brightness and noise.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from tools.synthactions.geometry import box_status
from tools.synthactions.scene import ActorSpec, BackgroundSpec, FrameTruth, StreamPlan, actor_dims, segment_state
from tools.synthactions.sources import load_source
from tools.synthactions.textures import (
    color_jitter,
    colorize,
    crop_resize,
    gradient,
    is_gray,
    pattern_field,
    smooth_noise,
    tint_gray,
)


def build_background(spec: BackgroundSpec, width: int, height: int) -> np.ndarray:
    """The background canvas: the frame plus room for panning on every side."""
    pad_x = int(math.ceil(spec.pan[0])) + 2
    pad_y = int(math.ceil(spec.pan[1])) + 2
    w, h = width + 2 * pad_x, height + 2 * pad_y
    rng = np.random.default_rng([spec.seed, 11])
    if spec.kind in ("photo", "video"):
        img = crop_resize(load_source(spec.source), spec.crop, w, h)
        if is_gray(img) and rng.random() < 0.6:
            img = tint_gray(img, spec.colors)
        img = color_jitter(img, spec.jitter)
    elif spec.kind == "texture":
        img = colorize(pattern_field(rng, h, w, spec.pattern, spec.angle), spec.colors[: 2 + int(rng.integers(0, 2))])
    elif spec.kind in ("linear_gradient", "radial_gradient"):
        colors = spec.colors[: 2 + int(rng.integers(0, 2))]
        img = gradient(h, w, spec.angle, spec.kind == "radial_gradient", colors, rng)
    elif spec.kind == "smooth_noise":
        if rng.random() < 0.5:
            cells = rng.uniform(2, 10)
            chans = [smooth_noise(rng, h, w, cells, int(rng.integers(2, 6)), rng.uniform(0.3, 0.7)) for _ in range(3)]
            img = np.clip(np.stack(chans, -1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            img = color_jitter(img, spec.jitter)
        else:
            img = colorize(pattern_field(rng, h, w, "noise", 0.0), spec.colors)
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
            color = gradient(h_ref, w_ref, actor.angle, actor.fill == "radial_gradient", actor.colors[:2], rng)
        elif actor.fill == "texture" and actor.pattern:
            color = colorize(pattern_field(rng, h_ref, w_ref, actor.pattern, actor.angle), actor.colors[:2])
        elif actor.fill in ("texture", "photo"):
            color = crop_resize(load_source(actor.source), actor.crop, w_ref, h_ref)
            if actor.fill == "texture" or (is_gray(color) and rng.random() < 0.5):
                color = tint_gray(color, actor.colors)
            color = color_jitter(color, actor.jitter)
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
            w, h = actor_dims(self.plan.actors[actor], self._ref_area[actor], self.plan.width, self.plan.height)
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
        st = segment_state(seg, index)
        frame = self._background(t)
        area_frac, inside, present, box = 0.0, False, False, None
        if st.actor >= 0:
            actor = plan.actors[st.actor]
            w, h = actor_dims(actor, st.area, W, H)
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
