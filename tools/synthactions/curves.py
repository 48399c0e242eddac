"""Easing curves of actions: strictly increasing maps of [0, 1] onto itself.

The set is closed under time reversal (linear, ease_in <-> ease_out,
ease_in_out, "switch" logistic steps with centre c <-> 1-c), so that mirror
pairs of actions are time reversals of each other in distribution.
"""

from __future__ import annotations

import math

import numpy as np

CURVES = ("linear", "ease_in", "ease_out", "ease_in_out", "switch")
_CURVE_WEIGHTS = (0.3, 0.15, 0.15, 0.25, 0.15)


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


def random_curve(rng: np.random.Generator) -> tuple[str, tuple[float, float]]:
    """A curve and its parameters (steepness, centre) for one action."""
    name = CURVES[int(rng.choice(len(CURVES), p=_CURVE_WEIGHTS))]
    if name == "switch":
        return name, (round(float(rng.uniform(8.0, 24.0)), 4), round(float(rng.uniform(0.25, 0.75)), 4))
    if name == "linear":
        return name, (1.0, 0.5)
    return name, (round(float(rng.uniform(1.5, 3.0)), 4), 0.5)

