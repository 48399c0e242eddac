"""Whether a stream may continue from its snapshot: a pure decision, the clock passed in.

Checked in this order, so that the reason logged is the one that matters
most: a snapshot of another head is never loaded (whatever its age), nor
one fed by another backbone; then its age against ``max_age_s``. The age is
wall-clock time (the snapshot may come from another process or machine): a
snapshot dated further in the future than ``max_age_s`` says a clock is
wrong, and is refused too, rather than trusted for as long as the skew.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.state.identity import short
from pipeline.state.snapshot import StreamSnapshot

RESTORED = "restored"
REASONS = (RESTORED, "other_head", "other_backbone", "too_old", "from_future")


@dataclass(frozen=True)
class RestoreDecision:
    use: bool
    reason: str  # one of REASONS: a bounded metric label
    detail: str  # what a log line says

    def __bool__(self) -> bool:
        return self.use


def restore_decision(snapshot: StreamSnapshot, now_wall: float, max_age_s: float, head_id: str,
                     backbone_id: str) -> RestoreDecision:
    """Continue ``snapshot`` (taken at its ``wall_time``) at ``now_wall`` with this head and backbone?"""
    stream = snapshot.stream
    if snapshot.head_id != head_id:
        return RestoreDecision(False, "other_head", f"stream {stream!r}: the snapshot belongs to head "
                               f"{short(snapshot.head_id)}, this run's head is {short(head_id)}")
    if snapshot.backbone_id != backbone_id:
        return RestoreDecision(False, "other_backbone", f"stream {stream!r}: the snapshot was fed by backbone "
                               f"{short(snapshot.backbone_id)}, this run's is {short(backbone_id)}")
    age = now_wall - snapshot.wall_time
    if age > max_age_s:
        return RestoreDecision(False, "too_old", f"stream {stream!r}: the snapshot is {age:.1f} s old, "
                               f"older than max_age_s {max_age_s:g} s")
    if age < -max_age_s:
        return RestoreDecision(False, "from_future", f"stream {stream!r}: the snapshot is dated {-age:.1f} s "
                               "in the future: a clock is wrong")
    return RestoreDecision(True, RESTORED, f"stream {stream!r}: continuing from seq {snapshot.seq} of generation "
                           f"{snapshot.generation} (t={snapshot.t:.3f} s), taken {max(age, 0.0):.1f} s ago")
