"""Checks of a plan against the spec: the timeline, each segment's states, and what carries across segments."""

from __future__ import annotations

import math

from tools.evaluation.annotations import BACKGROUND
from tools.synthactions.geometry import box_status
from tools.synthactions.limits import (
    SPEC,
    SPEC_ACTION_DURATION,
    SPEC_BACKGROUND_DURATION,
    SPEC_BRIGHTNESS,
    SPEC_LIGHTS_DURATION,
)
from tools.synthactions.scene import Segment, StreamPlan, boundary_ms


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
    """What jumps between two adjacent segments."""
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
    """Where a segment's start or end state breaks the spec for its label."""
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
        if st == "inside" and not SPEC.min_area <= a <= SPEC.max_area:
            out.append(f"{where}: fully visible area {a}")
    if s.label in ("approach", "recede"):
        ratio = s.area1 / s.area0 if s.label == "approach" else s.area0 / s.area1
        if st0 != "inside" or st1 != "inside" or ratio < SPEC.min_growth:
            out.append(f"{where}: {st0}->{st1}, factor {ratio:.3f}")
    elif s.label == "enter" and (st0 != "outside" or st1 != "inside"):
        out.append(f"{where}: {st0}->{st1}")
    elif s.label == "exit" and (st0 != "inside" or st1 != "outside"):
        out.append(f"{where}: {st0}->{st1}")
    elif s.label == "lights_on" and s.b1 - s.b0 < SPEC.min_light_change:
        out.append(f"{where}: change {s.b1 - s.b0:.3f}")
    elif s.label == "lights_off" and s.b0 - s.b1 < SPEC.min_light_change:
        out.append(f"{where}: change {s.b0 - s.b1:.3f}")
    elif s.label == BACKGROUND:
        sec = s.frames / plan.fps
        if abs(s.b1 - s.b0) > SPEC.bg_brightness_per_s * sec:
            out.append(f"{where}: brightness drift")
        if s.actor >= 0:
            if math.hypot(s.cx1 - s.cx0, s.cy1 - s.cy0) > SPEC.bg_shift_per_s * W * sec:
                out.append(f"{where}: actor drift")
            if abs(math.log(s.area1 / s.area0)) > math.log1p(SPEC.bg_size_per_s) * sec:
                out.append(f"{where}: actor size drift")
            if st0 == "outside" or st1 == "outside":
                out.append(f"{where}: actor leaves in background")
    if s.label not in (BACKGROUND, "enter") and s.label not in ("lights_on", "lights_off") and s.actor < 0:
        out.append(f"{where}: no actor")
    return out
