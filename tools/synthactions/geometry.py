"""Geometry of actors: silhouettes, how much of the frame a box may take, and where a box lies."""

from __future__ import annotations

import math

import numpy as np

from tools.synthactions.limits import FIT, PLAN
from tools.synthactions.scene import ActorSpec


def actor_max_area(actor: ActorSpec, width: int, height: int) -> float:
    """The largest fully visible area the planner gives this actor in a frame of this size."""
    box_fit = min((FIT * width) ** 2 / actor.aspect, (FIT * height) ** 2 * actor.aspect)
    return min(PLAN.max_area, actor.fill_ratio * box_fit / (width * height))


def box_status(box: tuple[float, float, float, float], width: int, height: int) -> str:
    """``inside`` (fully visible), ``outside`` (fully outside) or ``partial``."""
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return "outside"
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return "inside"
    return "partial"


def visible_share(box: tuple[float, float, float, float], width: int, height: int) -> float:
    """The share of the box inside the frame."""
    x0, y0, x1, y1 = box
    ox = max(0.0, min(x1, width) - max(x0, 0.0))
    oy = max(0.0, min(y1, height) - max(y0, 0.0))
    return ox * oy / max((x1 - x0) * (y1 - y0), 1e-9)


def polygon_area(pts: np.ndarray) -> float:
    """The area of a simple polygon (shoelace formula)."""
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def shape_polygon(rng: np.random.Generator, shape: str) -> tuple[np.ndarray, float]:
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
