"""An independent second renderer of SynthActions v1 (docs/synthactions.md).

Written from the spec text alone, with a deliberately plain look: the background
is a two-colour gradient, a checkerboard or smoothed noise (possibly drifting a
few pixels per second), the actor one flat circle, square or triangle. Video
from here checks that a model trained on the project's own generator learnt
the classes, not that generator's look. It shares no code with the project's
renderer (the rest of :mod:`tools.synthactions`); only the annotation format.

:func:`write_alt_dataset` writes DIR/videos/alt{S}_{i:04d}.mp4 and
DIR/annotations.txt (THUMOS'14 style).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tools.evaluation.annotations import SYNTH_ACTIONS_CLASSES, ActionInstance, write_annotations

ACTIONS = SYNTH_ACTIONS_CLASSES[1:]
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (1280, 720))
DEFAULT_FPS: tuple[int, ...] = (10, 15, 24, 30)
LIGHTS = ("lights_on", "lights_off")
SHAPES = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # area / (bounding side)^2
A_MIN, A_MAX = 0.022, 0.38  # actor area share when fully visible (spec: 2%..40%), with margin
FACTOR_MIN, FACTOR_CAP = 2.7, 8.0  # approach/recede area factor (spec: >= 2.5)
B_MIN, B_MAX, LIGHT_STEP = 0.25, 1.0, 0.42  # brightness range; lights change (spec: >= 0.4)
DEAD = (B_MAX - LIGHT_STEP, B_MIN + LIGHT_STEP)  # no lights action can start strictly between these
BG_RATE = 0.03  # background brightness drift per second (spec: <= 0.05)
JITTER = 0.0015  # still-actor jitter amplitude per axis, share of width (peak ~1.3% width/s; spec 2%)
DRIFT = 3.0  # background drift, pixels per second per axis
EDGE_GAP = 2.0  # pixels between the actor and the frame edge when fully outside


@dataclass(frozen=True)
class Plan:
    """Per-frame scene state of one stream and its actions as (class, first frame, end frame)."""

    width: int
    height: int
    fps: int
    shape: str
    present: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    side: np.ndarray
    bright: np.ndarray
    actions: list[tuple[str, int, int]]


def _frames(lo_s: float, hi_s: float, fps: int) -> tuple[int, int]:
    """Frame counts strictly inside [lo_s, hi_s] seconds (so ms rounding cannot break the limits)."""
    return math.floor(lo_s * fps) + 1, math.ceil(hi_s * fps) - 1


def plan_stream(rng: np.random.Generator, width: int, height: int, fps: int, n_frames: int,
                counts: dict[str, int]) -> Plan:
    """One stream's scene, frame by frame; ``counts`` (actions per class so far, updated) steers the balance."""
    W, H = width, height
    shape = str(rng.choice(list(SHAPES)))
    k = SHAPES[shape]
    m = math.ceil(JITTER * W * 2) + 2  # margin kept inside the frame when "fully inside"
    a_hi = min(A_MAX, k * (H - 2 * m) ** 2 / (W * H))
    side_of = lambda a: math.sqrt(a * W * H / k)  # noqa: E731
    area_of = lambda s: k * s * s / (W * H)  # noqa: E731
    clamp_in = lambda x, y, s: (min(max(x, m + s / 2), W - m - s / 2), min(max(y, m + s / 2), H - m - s / 2))  # noqa: E731

    def inside_pos(s: float) -> tuple[float, float]:
        return rng.uniform(m + s / 2, W - m - s / 2), rng.uniform(m + s / 2, H - m - s / 2)

    def outside_pos(x: float, y: float, s: float) -> tuple[float, float]:
        edge, off = rng.integers(4), s / 2 + EDGE_GAP
        return [(-off, y), (W + off, y), (x, -off), (x, H + off)][edge]

    present, inside = np.zeros(n_frames, bool), False
    cx, cy, side, bright = (np.zeros(n_frames) for _ in range(4))
    b, x, y, s = rng.uniform(B_MIN, B_MAX), 0.0, 0.0, 0.0
    r = rng.random()
    if 0.3 <= r < 0.8:  # a still actor fully inside
        s = side_of(rng.uniform(A_MIN, a_hi))
        (x, y), inside, on = inside_pos(s), True, True
    elif r >= 0.8:  # a still actor partly outside an edge (20..80% of it hidden): only lights follow
        s = side_of(rng.uniform(A_MIN, a_hi))
        x, y = inside_pos(s)
        p = rng.uniform(0.2, 0.8) * s
        x, y = [(s / 2 - p, y), (W - s / 2 + p, y), (x, s / 2 - p), (x, H - s / 2 + p)][rng.integers(4)]
        on = True
    else:
        on = False

    def background(f0: int, f1: int) -> None:
        nonlocal b
        n = f1 - f0
        b_end = float(np.clip(b + rng.choice([0.0, 1.0]) * rng.uniform(-BG_RATE, BG_RATE) * n / fps, B_MIN, B_MAX))
        if on and not inside and DEAD[0] < b_end < DEAD[1]:  # only lights can follow: leave the dead zone
            b_end = DEAD[0] if b <= sum(DEAD) / 2 else DEAD[1]  # < 0.045 away from b, over > 1 s
        u = np.arange(n) / n
        cycles = max(1, round(n / fps / 2))
        ph = rng.uniform(0, 2 * np.pi)
        jx = JITTER * W * np.sin(2 * np.pi * cycles * u) * on
        jy = JITTER * W * np.sin(2 * np.pi * cycles * u) * math.sin(ph) * on
        present[f0:f1], cx[f0:f1], cy[f0:f1], side[f0:f1] = on, x + jx, y + jy, s
        bright[f0:f1] = b + (b_end - b) * u
        b = b_end

    def action(cls: str, f0: int, f1: int) -> None:
        nonlocal x, y, s, b, on, inside
        u = np.arange(f1 - f0) / (f1 - f0 - 1)
        x0, y0, s0, b0, x1, y1, s1, b1 = x, y, s, b, x, y, s, b
        if cls in ("approach", "recede"):
            a = area_of(s)
            f = rng.uniform(FACTOR_MIN, min(FACTOR_CAP, a_hi / a if cls == "approach" else a / A_MIN))
            s1 = s * math.sqrt(f if cls == "approach" else 1 / f)
            x1, y1 = clamp_in(x + rng.uniform(-0.1, 0.1) * W, y + rng.uniform(-0.1, 0.1) * H, s1)
        elif cls == "enter":
            s0 = s1 = side_of(rng.uniform(A_MIN, a_hi))
            x1, y1 = inside_pos(s1)
            x0, y0 = outside_pos(x1, y1, s1)
        elif cls == "exit":
            x1, y1 = outside_pos(x, y, s)
        else:
            up, down = min(b + LIGHT_STEP, B_MAX), max(b - LIGHT_STEP, B_MIN)  # min/max: float rounding at DEAD
            b1 = rng.uniform(up, B_MAX) if cls == "lights_on" else rng.uniform(B_MIN, down)
        present[f0:f1] = True if cls in ("enter", "exit") else on
        cx[f0:f1], cy[f0:f1] = x0 + (x1 - x0) * u, y0 + (y1 - y0) * u
        side[f0:f1] = s0 * (s1 / s0) ** u if s0 > 0 else 0.0  # constant rate of log-area
        bright[f0:f1] = b0 + (b1 - b0) * u
        x, y, s, b = x1, y1, s1, b1
        if cls in ("enter", "exit"):
            on = inside = cls == "enter"

    def feasible() -> list[str]:
        out = []
        if on and inside:
            a = area_of(s)
            out += ["approach"] * (a * FACTOR_MIN <= a_hi) + ["recede"] * (a / FACTOR_MIN >= A_MIN) + ["exit"]
        if not on:
            out.append("enter")
        out += ["lights_on"] * (b <= DEAD[0]) + ["lights_off"] * (b >= DEAD[1])
        return out

    gmin, gmax = _frames(1.0, 5.0, fps)
    amin = {c: _frames(0.5, 2.0, fps) if c in LIGHTS else _frames(1.0, 3.0, fps) for c in ACTIONS}
    big = _frames(1.0, 3.0, fps)[0]
    if n_frames < 2 * gmin + big:
        raise ValueError(f"a stream of {n_frames} frames at {fps} fps is too short for background-action-background")
    actions: list[tuple[str, int, int]] = []
    g = int(rng.integers(gmin, min(gmax, n_frames - big - gmin) + 1))
    background(0, g)
    pos = g
    while True:
        cands = feasible()
        low = min(counts[c] for c in cands)
        cls = str(rng.choice([c for c in cands if counts[c] == low] if rng.random() < 0.75 else cands))
        lo, hi = amin[cls]
        d = int(rng.integers(lo, min(hi, n_frames - pos - gmin) + 1))
        action(cls, pos, pos + d)
        actions.append((cls, pos, pos + d))
        counts[cls] += 1
        pos += d
        if n_frames - pos <= gmax:
            background(pos, n_frames)
            break
        g = int(rng.integers(gmin, min(gmax, n_frames - pos - big - gmin) + 1))
        background(pos, pos + g)
        pos += g
    return Plan(W, H, fps, shape, present, cx, cy, side, bright, actions)


def _background(rng: np.random.Generator, ch: int, cw: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c1, c2 = rng.integers(0, 256, (2, 3)).astype(np.float32)
    kind = rng.integers(4)
    if kind < 2:  # vertical / horizontal gradient
        t = np.linspace(0, 1, ch if kind == 0 else cw, dtype=np.float32)
        t = np.broadcast_to(t[:, None] if kind == 0 else t[None, :], (ch, cw))
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(max(6, w // 64), max(8, w // 6)))
        t = ((np.arange(ch)[:, None] // cell + np.arange(cw)[None, :] // cell) % 2).astype(np.float32)
    else:  # smoothed uniform noise
        lo = rng.random((ch // 8 + 2, cw // 8 + 2)).astype(np.float32)
        lo = cv2.GaussianBlur(lo, (0, 0), rng.uniform(0.1, 0.6) * w / 64)
        t = cv2.resize(lo, (cw, ch), interpolation=cv2.INTER_LINEAR)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c1 + (c2 - c1) * t[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), c1, c2


def _contrasting(rng: np.random.Generator, c1: np.ndarray, c2: np.ndarray) -> tuple[int, int, int]:
    """The candidate colour farthest from every colour on the background's c1..c2 segment."""
    cand = rng.integers(0, 256, (64, 3)).astype(np.float32)
    d = c2 - c1
    t = np.clip(((cand - c1) @ d) / max(float(d @ d), 1e-6), 0, 1)
    dist = np.linalg.norm(cand - (c1 + t[:, None] * d), axis=1)
    return tuple(int(v) for v in cand[int(np.argmax(dist))])


def draw_actor(frame: np.ndarray, shape: str, x: float, y: float, side: float, colour: tuple[int, int, int]) -> None:
    """One filled shape whose bounding square of ``side`` pixels is centred on (x, y)."""
    h, sh = side / 2, 16  # 4 bits of sub-pixel precision
    if shape == "circle":
        cv2.circle(frame, (round(x * sh), round(y * sh)), round(h * sh), colour, -1, cv2.LINE_AA, 4)
        return
    pts = [(x, y - h), (x - h, y + h), (x + h, y + h)] if shape == "triangle" else \
        [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    cv2.fillConvexPoly(frame, np.rint(np.array(pts) * sh).astype(np.int32), colour, cv2.LINE_AA, 4)


def render_stream(rng: np.random.Generator, plan: Plan, path: Path) -> None:
    """Render ``plan`` into an mp4 at ``path``: background, actor, brightness, then sensor noise."""
    W, H, fps, n = plan.width, plan.height, plan.fps, len(plan.bright)
    margin = math.ceil(DRIFT * n / fps) + 2
    canvas, c1, c2 = _background(rng, H + 2 * margin, W + 2 * margin, W)
    colour = _contrasting(rng, c1, c2)
    vx, vy = rng.uniform(-DRIFT, DRIFT, 2) * (rng.random() < 0.6)
    sigma, pad = rng.uniform(0.0, 8.0), 16
    noise = np.rint(rng.normal(0.0, sigma, (H + pad, W + pad, 3)))
    npos = np.clip(noise, 0, 255).astype(np.uint8)
    nneg = np.clip(-noise, 0, 255).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {path} (codec mp4v, {W}x{H} at {fps} fps)")
    try:
        for i in range(n):
            ox = margin + int(round(vx * i / fps))
            oy = margin + int(round(vy * i / fps))
            frame = canvas[oy:oy + H, ox:ox + W].copy()
            if plan.present[i]:
                draw_actor(frame, plan.shape, plan.cx[i], plan.cy[i], plan.side[i], colour)
            frame = cv2.convertScaleAbs(frame, alpha=float(plan.bright[i]))
            if sigma > 0.5:
                dx, dy = rng.integers(0, pad, 2)
                frame = cv2.subtract(cv2.add(frame, npos[dy:dy + H, dx:dx + W]), nneg[dy:dy + H, dx:dx + W])
            writer.write(frame)
    finally:
        writer.release()


def _ms(t: float) -> float:
    """Seconds floored to the millisecond: the frame at ``t`` stays inside [start, end)."""
    return math.floor(t * 1000 + 1e-6) / 1000


def write_alt_dataset(out_dir: Path, count: int, seed: int, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
                      fps_choices: Sequence[int] = DEFAULT_FPS,
                      duration_range: tuple[float, float] = (30.0, 50.0)) -> None:
    """Render ``count`` streams of seed ``seed`` into ``out_dir``; raises ValueError on a bad argument."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not sizes or any(not (320 <= w <= 1920 and 240 <= h <= 1080 and w % 2 == 0 and h % 2 == 0) for w, h in sizes):
        raise ValueError(f"sizes must be even WxH from 320x240 to 1920x1080, got {list(sizes)}")
    if not fps_choices or any(not (10 <= int(f) == f <= 30) for f in fps_choices):
        raise ValueError(f"fps choices must be whole numbers from 10 to 30, got {list(fps_choices)}")
    lo, hi = duration_range
    if not 4.0 <= lo <= hi:
        raise ValueError(f"duration range must satisfy 4 <= min <= max seconds, got {lo}..{hi}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    counts = {c: 0 for c in ACTIONS}
    instances: list[ActionInstance] = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        w, h = sizes[int(rng.integers(len(sizes)))]
        fps = int(fps_choices[int(rng.integers(len(fps_choices)))])
        n_frames = int(round(rng.uniform(lo, hi) * fps))
        plan = plan_stream(rng, int(w), int(h), fps, n_frames, counts)
        video_id = f"alt{seed}_{i:04d}"
        render_stream(rng, plan, out_dir / "videos" / f"{video_id}.mp4")
        instances += [ActionInstance(video_id, c, _ms(f0 / fps), _ms(f1 / fps)) for c, f0, f1 in plan.actions]
    write_annotations(out_dir / "annotations.txt", instances)
