"""When a node counts as lost: silent past the timeout or reported dead by Ray, each loss reported once."""

from __future__ import annotations

import pytest

from pipeline.cluster.membership import Membership, MembershipError, UnknownMemberError
from pipeline.errors import ActionPipeError
from tests.support.fakes import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def members(clock) -> Membership:
    m = Membership(5.0, clock)
    m.joined("a")
    m.joined("b")
    return m


def test_a_silent_node_is_lost_after_the_timeout_exactly_once(members, clock):
    clock.now = 105.0
    assert members.lost() == []  # silent for exactly the timeout: not yet
    clock.now = 105.01
    assert members.lost() == ["a", "b"]
    assert members.lost() == []
    clock.now = 500.0
    assert members.lost() == []
    assert members.is_lost("a") and members.is_lost("b")


def test_heartbeats_postpone_the_verdict(members, clock):
    clock.now = 104.0
    assert members.heard("a") is True
    clock.now = 108.0
    assert members.lost() == ["b"]
    assert members.heard("a") is True
    clock.now = 112.9
    assert members.lost() == []
    clock.now = 113.1
    assert members.lost() == ["a"]


def test_ray_saying_dead_is_taken_at_once_even_right_after_a_heartbeat(members, clock):
    members.heard("a")
    assert members.ray_says_dead("a") is True
    assert members.heard("a") is True  # a heartbeat already in flight does not undo it
    assert members.lost() == ["a"]
    assert members.lost() == []
    assert members.ray_says_dead("a") is False  # reported once, not twice


def test_a_lost_node_stays_lost_whatever_it_sends_until_it_joins_again(members, clock):
    clock.now = 200.0
    assert members.lost() == ["a", "b"]
    assert members.heard("a") is False
    clock.now = 201.0
    assert members.lost() == []
    members.joined("a")  # a new incarnation, tracked afresh
    assert not members.is_lost("a")
    assert members.silent_for("a") == 0.0
    clock.now = 205.0
    assert members.lost() == []
    clock.now = 206.5
    assert members.lost() == ["a"]  # and lost once more, once


def test_lost_takes_an_explicit_now(members, clock):
    assert members.lost(now=110.0) == ["a", "b"]
    assert clock.now == 100.0


def test_silent_for_counts_from_the_last_heartbeat_or_the_join(members, clock):
    clock.now = 103.5
    assert members.silent_for("a") == 3.5
    members.heard("a")
    clock.now = 104.0
    assert members.silent_for("a") == 0.5
    assert members.silent_for("b", now=110.0) == 10.0
    with pytest.raises(UnknownMemberError):
        members.silent_for("ghost")


def test_an_unknown_or_forgotten_node_is_never_reported(members, clock):
    assert members.heard("ghost") is False
    assert members.ray_says_dead("ghost") is False
    members.forget("b")
    members.forget("b")  # a repeated forget is fine
    assert members.nodes() == ["a"]
    clock.now = 300.0
    assert members.lost() == ["a"]
    with pytest.raises(UnknownMemberError):
        members.is_lost("b")


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "5", True])
def test_a_timeout_that_cannot_work_is_refused(bad, clock):
    with pytest.raises(MembershipError) as caught:
        Membership(bad, clock)
    assert isinstance(caught.value, ActionPipeError)
