"""Planning a stream: its timeline, actors, background and noise, cheaply and without pixels.

The scene state only changes through actions or through background drift
within the spec's limits. Actions need: approach/recede a fully visible actor
with room to change by 2.6x inside 2.2%..38% (and inside the frame); enter no
actor; exit a fully visible actor; lights_on brightness <= 0.59; lights_off
brightness >= 0.66.

Partly-outside actors. A stream may *start* with an actor partly outside an
edge (5%..92% of its extent outside). Background drift moves it slowly in or
out (never fully out); once fully inside it is an ordinary actor. A fully
visible actor may also drift a little across an edge during a gap (15% of
moving gaps). While an actor is partly outside, only lights actions are
possible, and gaps steer brightness out of the 0.59..0.66 dead zone so some
action is always feasible.

Class balance. Among feasible classes the planner picks with weights
prior * 0.2**(count - min count) over the stream's own counts (so video k
does not depend on the others); an infeasible class lends its weight to the
action that would enable it (e.g. exit when enter is due). The priors are
calibrated so that each class gets 1/6 +- ~1.5 points over a data set.

Mirror pairs are time reversals of each other in distribution: the same
size/brightness ranges, log-uniform factors, and a set of easing curves that
is closed under reversal (:mod:`tools.synthactions.curves`).
"""

from __future__ import annotations

import math

import numpy as np

from tools.evaluation.annotations import BACKGROUND, SYNTH_ACTIONS_CLASSES
from tools.synthactions.curves import random_curve
from tools.synthactions.geometry import actor_max_area, box_status, visible_share
from tools.synthactions.limits import (
    EDGE_PX,
    MS_MARGIN,
    PLAN,
    SPEC_ACTION_DURATION,
    SPEC_BACKGROUND_DURATION,
    SPEC_BRIGHTNESS,
    SPEC_LIGHTS_DURATION,
    check_fps,
    check_size,
)
from tools.synthactions.looks import LOOKS, Looks
from tools.synthactions.scene import ActorSpec, BackgroundSpec, Segment, StreamPlan, actor_dims
from tools.synthactions.scenery import make_actor, make_background
from tools.synthactions.validation import validate_plan

ACTION_CLASSES: tuple[str, ...] = SYNTH_ACTIONS_CLASSES[1:]

# Class priors of the planner, calibrated so that shares come out within about
# 1.5 points of 1/6 over a data set (approach/recede need a fully visible actor
# with room to change size, so they are favoured when possible).
_CLASS_PRIOR = {"approach": 2.2, "recede": 2.2, "enter": 1.0, "exit": 0.75, "lights_on": 0.8, "lights_off": 0.8}


def _frame_range(fps: float, lo_s: float, hi_s: float, offset: float = 0.0) -> tuple[int, int]:
    """Frame counts ``n`` with ``lo <= (n + offset)/fps <= hi`` kept clear by a small margin."""
    n_lo = math.ceil((lo_s + MS_MARGIN) * fps - offset)
    n_hi = math.floor((hi_s - MS_MARGIN) * fps - offset)
    return max(n_lo, 1), n_hi


class _Planner:
    """The scene as planned so far (current actor, centre, area, brightness) and the segments that led to it."""

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
        return actor_dims(self.actors[actor], area, self.width, self.height)

    def box(self, actor: int, cx: float, cy: float, area: float) -> tuple[float, float, float, float]:
        w, h = self.dims(actor, area)
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def status(self) -> str:
        if self.actor < 0:
            return "outside"
        return box_status(self.box(self.actor, self.cx, self.cy, self.area), self.width, self.height)

    def a_max(self, actor: int) -> float:
        return actor_max_area(self.actors[actor], self.width, self.height)

    def fit_range(self, actor: int, area: float) -> tuple[tuple[float, float], tuple[float, float]]:
        w, h = self.dims(actor, area)
        return (w / 2 + EDGE_PX, self.width - w / 2 - EDGE_PX), (h / 2 + EDGE_PX, self.height - h / 2 - EDGE_PX)

    def new_actor(self) -> int:
        self.actors.append(make_actor(self.rng, self.width, self.height, self.background.source, self.looks))
        return len(self.actors) - 1

    def random_area(self, actor: int) -> float:
        return float(math.exp(self.rng.uniform(math.log(PLAN.min_area), math.log(self.a_max(actor)))))

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
            if self.area * PLAN.min_growth <= self.a_max(self.actor) * 0.999:
                out.append("approach")
            if self.area / PLAN.min_growth >= PLAN.min_area * 1.001:
                out.append("recede")
            out.append("exit")
        if self.b + PLAN.min_light_change <= SPEC_BRIGHTNESS[1]:
            out.append("lights_on")
        if self.b - PLAN.min_light_change >= SPEC_BRIGHTNESS[0]:
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
            speed = rng.uniform(0.0, PLAN.bg_shift_per_s) * min(self.width, self.height)
            ang = rng.uniform(0, 2 * math.pi)
            if st0 == "partial" and rng.random() < 0.75:
                # Partly outside: mostly drift back in, near the allowed speed.
                x0, y0, x1, y1 = self.box(self.actor, self.cx, self.cy, self.area)
                ux = 1.0 if x0 < 0 else -1.0 if x1 > self.width else 0.0
                uy = 1.0 if y0 < 0 else -1.0 if y1 > self.height else 0.0
                ang = math.atan2(uy, ux)
                speed = rng.uniform(0.7, 1.0) * PLAN.bg_shift_per_s * min(self.width, self.height)
            dx, dy = speed * sec * math.cos(ang), speed * sec * math.sin(ang)
            rate = rng.uniform(-PLAN.bg_size_per_s, PLAN.bg_size_per_s)
            a1 = min(max(self.area * (1.0 + rate) ** sec, PLAN.min_area), self.a_max(self.actor))
            cx1, cy1 = self.cx + dx, self.cy + dy
            if st0 == "inside" and rng.random() < 0.85:
                (xlo, xhi), (ylo, yhi) = self.fit_range(self.actor, a1)
                cx1, cy1 = min(max(cx1, xlo), xhi), min(max(cy1, ylo), yhi)
                if not (xlo <= cx1 <= xhi and ylo <= cy1 <= yhi):
                    cx1, cy1, a1 = self.cx, self.cy, self.area
            else:
                share0 = visible_share(self.box(self.actor, self.cx, self.cy, self.area), self.width, self.height)
                need = min(0.25, share0 * 0.999)
                for _ in range(8):
                    box1 = self.box(self.actor, cx1, cy1, a1)
                    if visible_share(box1, self.width, self.height) >= need:
                        break
                    dx, dy = dx / 2, dy / 2
                    cx1, cy1 = self.cx + dx, self.cy + dy
                else:
                    cx1, cy1 = self.cx, self.cy
        if rng.random() < 0.65:
            rate = rng.uniform(-PLAN.bg_brightness_per_s, PLAN.bg_brightness_per_s)
            b1 = min(max(self.b + rate * sec, SPEC_BRIGHTNESS[0]), SPEC_BRIGHTNESS[1])
        b_start = self.b
        seg_actor, cx0, cy0, a0 = self.actor, self.cx, self.cy, self.area
        self.cx, self.cy, self.area, self.b = cx1, cy1, a1, b1
        if need_action_after and not self.feasible():
            # Only lights are possible (actor partly outside): leave the dead zone of brightness.
            lo_b = SPEC_BRIGHTNESS[1] - PLAN.min_light_change
            hi_b = SPEC_BRIGHTNESS[0] + PLAN.min_light_change
            if b_start <= lo_b or b_start >= hi_b:
                target = b_start
            else:
                target = lo_b - 1e-6 if b_start - lo_b < hi_b - b_start else hi_b + 1e-6
            if abs(target - b_start) > PLAN.bg_brightness_per_s * sec:
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
        curve, params = random_curve(rng)
        cx0, cy0, a0, b0 = self.cx, self.cy, self.area, self.b
        cx1, cy1, a1, b1 = cx0, cy0, a0, b0
        actor = self.actor
        if label == "approach" or label == "recede":
            if label == "approach":
                f = math.exp(rng.uniform(math.log(PLAN.min_growth), math.log(self.a_max(actor) / a0)))
                a1 = min(a0 * f, self.a_max(actor))
            else:
                f = math.exp(rng.uniform(math.log(PLAN.min_growth), math.log(a0 / PLAN.min_area)))
                a1 = max(a0 / f, PLAN.min_area)
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
            b1 = b0 + rng.uniform(PLAN.min_light_change, SPEC_BRIGHTNESS[1] - b0)
        elif label == "lights_off":
            b1 = b0 - rng.uniform(PLAN.min_light_change, b0 - SPEC_BRIGHTNESS[0])
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
        margin = EDGE_PX + rng.uniform(0.0, 0.15) * min(w, h)
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
    check_size(width, height)
    check_fps(fps)
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

