"""Images made from nothing or adjusted: noise, patterns, gradients, crops and colour changes.

Every function draws its randomness from the generator it is given, so the
same seed always makes the same image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of every pixel."""
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int, persistence: float) -> np.ndarray:
    """Value noise in [0, 1] of shape (h, w): ``octaves`` layers, each twice as fine and ``persistence`` as strong."""
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


def pattern_field(rng: np.random.Generator, h: int, w: int, pattern: str, angle: float) -> np.ndarray:
    """A scalar field in [0, 1] of shape (h, w)."""
    scale = float(max(h, w))
    if pattern == "noise":
        return smooth_noise(rng, h, w, rng.uniform(2, 8), int(rng.integers(2, 6)), rng.uniform(0.35, 0.7))
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


def colorize(field: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """A BGR image from a field in [0, 1], running through two or three colours."""
    c = np.asarray(colors, np.float32)
    if len(c) >= 3:
        f2 = field * 2.0
        lower = f2 < 1.0
        t = np.where(lower, f2, f2 - 1.0)[..., None]
        out = np.where(lower[..., None], c[0] + (c[1] - c[0]) * t, c[1] + (c[2] - c[1]) * t)
    else:
        out = c[0] + (c[1] - c[0]) * field[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def gradient(h: int, w: int, angle: float, radial: bool, colors: Sequence[tuple[int, int, int]], rng: np.random.Generator) -> np.ndarray:
    """A linear gradient along ``angle``, or a radial one around a random centre."""
    yy, xx = _grid(h, w)
    if radial:
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        r = np.hypot(xx - cx, yy - cy)
        f = r / max(float(r.max()), 1e-6)
    else:
        u = xx * math.cos(angle) + yy * math.sin(angle)
        f = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    return colorize(f.astype(np.float32), colors)


def crop_resize(img: np.ndarray, crop: tuple[float, float, float], w: int, h: int) -> np.ndarray:
    """The part of ``img`` that ``crop`` picks (where along x and y, 0..1, and its scale), resized to (w, h)."""
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


def color_jitter(img: np.ndarray, jitter: tuple[float, float, float, float]) -> np.ndarray:
    """``img`` with its hue shifted and its saturation, contrast and gamma changed."""
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


def tint_gray(img: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Give a grey image colour by mapping its luminance between two colours."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    return colorize(gray, colors[:2])


def is_gray(img: np.ndarray) -> bool:
    """Whether an image has (almost) no colour."""
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.int16)
    return int(np.abs(small - small[..., :1]).max()) < 6
