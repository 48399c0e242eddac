"""Deciding that a node is lost: silent for too long, or reported dead by Ray.

The coordinator heartbeats each node's agent; an answer postpones the verdict, silence for longer than
``lost_after_s`` (counted from the last answer, or from the join) reaches it. Ray's own word (its node
table says the node is dead, or the agent actor died) is taken at once: waiting out the timeout then would
only keep that node's streams dark for longer. Each loss is reported exactly once, so the caller fences the
node and places its streams again once; a late heartbeat from a lost node changes nothing (it may come from
the wrong side of a partition), and only a new join brings the name back, as a new incarnation.

The caller should act on ``lost()`` before it handles a join: a node that died and joined again between
two calls is otherwise tracked afresh, and its old incarnation's loss would go unreported.

Pure logic with an injected monotonic clock, so the tests move time by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import ActionPipeError, check_seconds


class MembershipError(ActionPipeError, ValueError):
    """Membership settings that cannot work, or a question about a node it does not track."""


class UnknownMemberError(MembershipError, LookupError):
    pass


@dataclass
class _Member:
    last_heard: float  # the clock's time of the join or the last heartbeat answered
    dead: bool = False  # Ray reported it dead: lost whatever the heartbeats say
    reported: bool = False  # lost() returned it already


class Membership:
    def __init__(self, lost_after_s: float, clock: Callable[[], float]) -> None:
        self.lost_after_s = check_seconds("lost_after_s", lost_after_s, MembershipError, positive=True)
        self._clock = clock
        self._members: dict[str, _Member] = {}

    def joined(self, node: str) -> None:
        """``node`` joined: tracked from now, afresh if it was lost before (a new incarnation)."""
        self._members[node] = _Member(self._clock())

    def heard(self, node: str) -> bool:
        """``node`` answered a heartbeat; False (ignored) when it is not tracked or already lost."""
        member = self._members.get(node)
        if member is None or member.reported:
            return False
        member.last_heard = self._clock()
        return True

    def ray_says_dead(self, node: str) -> bool:
        """Ray reports ``node`` dead (its node table, or its agent actor died): lost at the next ``lost()``,
        however recently it answered. False (ignored) when it is not tracked or already lost."""
        member = self._members.get(node)
        if member is None or member.reported:
            return False
        member.dead = True
        return True

    def lost(self, now: float | None = None) -> list[str]:
        """The nodes newly lost, by name, each returned once: silent for more than ``lost_after_s``, or
        reported dead by Ray. ``now`` defaults to the clock."""
        now = self._clock() if now is None else now
        newly = []
        for node, member in sorted(self._members.items()):
            if not member.reported and (member.dead or now - member.last_heard > self.lost_after_s):
                member.reported = True
                newly.append(node)
        return newly

    def is_lost(self, node: str) -> bool:
        return self._member(node).reported

    def silent_for(self, node: str, now: float | None = None) -> float:
        """Seconds since ``node`` last answered (or joined), for the metrics."""
        now = self._clock() if now is None else now
        return max(0.0, now - self._member(node).last_heard)

    def nodes(self) -> list[str]:
        """Every node tracked, lost or not, by name."""
        return sorted(self._members)

    def forget(self, node: str) -> None:
        """Stop tracking ``node`` (it left for good); unknown names are fine, a forget may be repeated."""
        self._members.pop(node, None)

    def _member(self, node: str) -> _Member:
        try:
            return self._members[node]
        except KeyError:
            raise UnknownMemberError(f"no node named {node!r} is tracked") from None
