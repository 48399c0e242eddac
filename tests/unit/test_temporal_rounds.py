"""The temporal worker's rounds: every ready stream stepped together, never waiting past the round's
wait, at once when no one else could come (injected clock)."""

from __future__ import annotations

import pytest

from pipeline.stages.temporal.rounds import RoundPolicy, RoundPolicyError


def test_no_round_while_no_stream_is_ready():
    rounds = RoundPolicy(0.04, 64)
    assert rounds.due_in(0, 32, 0.0) is None


def _busy(rounds: RoundPolicy, until: float, per_s: float = 200.0) -> None:
    """Streams became ready at ``per_s`` over the second before ``until`` (many streams: rounds wait)."""
    for i in range(int(per_s)):
        rounds.ready(until - 1.0 + i / per_s)
    rounds.stepped(0, until)


def test_a_round_waits_for_the_others_at_most_its_wait_from_its_first_ready_stream():
    rounds = RoundPolicy(0.04, 64)
    _busy(rounds, 10.0)
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
    _busy(rounds, 0.0)
    rounds.ready(0.0)
    assert rounds.due_in(3, 3, 0.0) == 0.0  # nobody else to wait for
    assert rounds.due_in(1, 0, 0.0) == 0.0  # the first stream of a run: no one holds state yet
    assert rounds.due_in(4, 32, 0.0) == 0.0  # full
    assert rounds.due_in(3, 32, 0.0) == pytest.approx(0.04)


def test_with_few_streams_a_round_does_not_wait():
    rounds = RoundPolicy(0.04, 64, min_expected=2.0)
    # 6 streams at 4 steps/s: 24 a second, about one more within 40 ms; not worth a wait.
    for i in range(24):
        rounds.ready(9.0 + i / 24)
        rounds.stepped(0, 9.0 + i / 24)
    rounds.ready(10.0)
    assert rounds.expected_within_wait(10.0) == pytest.approx(1.0)
    assert rounds.due_in(1, 6, 10.0) == 0.0
    # 32 streams: 128 a second, five within 40 ms: the round waits for them.
    for i in range(128):
        rounds.ready(10.0 + i / 128)
    rounds.stepped(0, 11.0)
    rounds.ready(11.0)
    assert rounds.due_in(1, 32, 11.0) == pytest.approx(0.04)


def test_a_backlog_is_stepped_without_waiting_again():
    rounds = RoundPolicy(0.04, 64)
    rounds.ready(0.0)
    rounds.stepped(5, 0.04)  # five streams still have frames waiting
    assert rounds.due_in(5, 32, 0.04) == 0.0


def test_zero_wait_steps_each_stream_as_it_comes():
    rounds = RoundPolicy(0.0, 64)
    rounds.ready(1.0)
    assert rounds.due_in(1, 32, 1.0) == 0.0


@pytest.mark.parametrize(("wait", "streams", "expected"), [(-0.1, 4, 2.0), (0.04, 0, 2.0), (0.04, 4, -1.0)])
def test_bad_parameters_are_refused(wait, streams, expected):
    with pytest.raises(RoundPolicyError):
        RoundPolicy(wait, streams, expected)
