"""The temporal worker's rounds: every ready stream stepped together, never waiting past the round's
wait, at once when no one else could come (injected clock)."""

from __future__ import annotations

import pytest

from pipeline.stages.temporal.rounds import RoundPolicy, RoundPolicyError


def test_no_round_while_no_stream_is_ready():
    rounds = RoundPolicy(0.04, 64)
    assert rounds.due_in(0, 32, 0.0) is None


def test_a_round_waits_for_the_others_at_most_its_wait_from_its_first_ready_stream():
    rounds = RoundPolicy(0.04, 64)
    rounds.ready(10.000)
    assert rounds.due_in(1, 32, 10.000) == pytest.approx(0.04)
    rounds.ready(10.030)  # a second stream joins the open round; the deadline stays
    assert rounds.due_in(2, 32, 10.030) == pytest.approx(0.01)
    assert rounds.due_in(2, 32, 10.050) == 0.0
    rounds.stepped(0, 10.050)
    assert rounds.due_in(0, 32, 10.050) is None
    rounds.ready(10.060)  # the next round opens with its own first stream
    assert rounds.due_in(1, 32, 10.070) == pytest.approx(0.03)


def test_a_round_goes_at_once_when_every_stream_with_state_is_ready_or_it_is_full():
    rounds = RoundPolicy(0.04, 4)
    rounds.ready(0.0)
    assert rounds.due_in(3, 3, 0.0) == 0.0  # nobody else to wait for
    assert rounds.due_in(1, 0, 0.0) == 0.0  # the first stream of a run: no one holds state yet
    assert rounds.due_in(4, 32, 0.0) == 0.0  # full
    assert rounds.due_in(3, 32, 0.0) == pytest.approx(0.04)


def test_a_backlog_is_stepped_without_waiting_again():
    rounds = RoundPolicy(0.04, 64)
    rounds.ready(0.0)
    rounds.stepped(5, 0.04)  # five streams still have frames waiting
    assert rounds.due_in(5, 32, 0.04) == 0.0


def test_zero_wait_steps_each_stream_as_it_comes():
    rounds = RoundPolicy(0.0, 64)
    rounds.ready(1.0)
    assert rounds.due_in(1, 32, 1.0) == 0.0


@pytest.mark.parametrize(("wait", "streams"), [(-0.1, 4), (0.04, 0)])
def test_bad_parameters_are_refused(wait, streams):
    with pytest.raises(RoundPolicyError):
        RoundPolicy(wait, streams)
