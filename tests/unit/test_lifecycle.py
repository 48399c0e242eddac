"""StreamStateMachine: one stream's life (connecting, live, reconnecting, ended, failed)."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.backoff import Backoff
from pipeline.sources.lifecycle import (
    STATES,
    Action,
    IllegalTransition,
    ReconnectPolicy,
    Step,
    StreamState,
    StreamStateMachine,
    Transition,
)

# jitter 0 so that every delay is exact: 1, 2, 4, 8, ... capped at 60
EXACT = Backoff(initial_s=1.0, max_s=60.0, multiplier=2.0, jitter=0.0)


def machine(live: bool = True, max_attempts: int | None = None, stale_after_s: float = 5.0,
            backoff: Backoff = EXACT, now: float = 100.0, name: str = "cam1") -> StreamStateMachine:
    policy = ReconnectPolicy(backoff=backoff, max_attempts=max_attempts, stale_after_s=stale_after_s)
    return StreamStateMachine(name, live=live, policy=policy, rng=random.Random(0), now=now)


def live_machine(now: float = 100.0, **kwargs) -> StreamStateMachine:
    """A live stream that opened at ``now`` and delivered its first frame then."""
    m = machine(live=True, now=now, **kwargs)
    m.opened(now)
    m.frame(now)
    return m


# -- the enums ---------------------------------------------------------------------


def test_states_and_which_are_finished() -> None:
    assert STATES == ("connecting", "live", "reconnecting", "ended", "failed")
    assert {s for s in StreamState if s.finished} == {StreamState.ENDED, StreamState.FAILED}


# -- starting ----------------------------------------------------------------------


def test_a_new_stream_is_connecting_and_opens_at_once() -> None:
    m = machine(now=100.0)

    assert m.state is StreamState.CONNECTING
    assert not m.finished
    assert m.attempts == 0 and m.reconnects == 0
    assert m.next_action(100.0) == Step(Action.OPEN)


def test_a_successful_open_goes_live_and_asks_for_reads() -> None:
    m = machine(now=100.0)

    t = m.opened(100.5)

    assert t == Transition("cam1", StreamState.CONNECTING, StreamState.LIVE, "opened", 100.5, "", None, 0)
    assert m.state is StreamState.LIVE
    assert m.next_action(100.5) == Step(Action.READ)
    assert m.next_action(10_000.0) == Step(Action.READ)


def test_a_live_camera_down_at_start_stays_connecting_and_retries_with_growing_backoff() -> None:
    m = machine(live=True, now=0.0)
    now = 0.0
    expected_delays = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]

    for attempt, expected in enumerate(expected_delays, start=1):
        assert m.next_action(now).action is Action.OPEN
        t = m.open_failed(now, "connection refused")
        assert t == Transition("cam1", StreamState.CONNECTING, StreamState.CONNECTING, "open_failed", now,
                               "connection refused", expected, attempt)
        assert m.state is StreamState.CONNECTING
        assert m.attempts == attempt
        # Before the delay has passed the machine says wait, and until when.
        assert m.next_action(now) == Step(Action.WAIT, now + expected)
        assert m.next_action(now + expected - 0.001) == Step(Action.WAIT, now + expected)
        now += expected

    assert m.next_action(now) == Step(Action.OPEN)
    assert m.reconnects == 0  # never was live
    assert m.last_error == "connection refused"


def test_a_permanent_error_fails_a_live_stream_at_once() -> None:
    m = machine(live=True, now=0.0)

    t = m.open_failed(0.0, "HTTP 404", permanent=True)

    assert t == Transition("cam1", StreamState.CONNECTING, StreamState.FAILED, "open_failed", 0.0, "HTTP 404", None, 0)
    assert m.state is StreamState.FAILED
    assert m.finished
    assert m.last_error == "HTTP 404"
    assert m.next_action(1000.0) == Step(Action.DONE)


def test_a_permanent_error_while_reconnecting_fails_the_stream() -> None:
    m = live_machine(now=0.0)
    m.dropped(1.0, "read_failed")

    t = m.open_failed(2.0, "no such device", permanent=True)

    assert (t.before, t.after, t.reason, t.error) == (
        StreamState.RECONNECTING, StreamState.FAILED, "open_failed", "no such device")
    assert m.finished


# -- recorded sources ----------------------------------------------------------------


def test_a_recorded_source_fails_on_its_first_open_failure() -> None:
    m = machine(live=False, now=0.0)

    t = m.open_failed(0.0, "cannot decode a.mp4")

    assert (t.before, t.after, t.reason, t.error, t.retry_in_s) == (
        StreamState.CONNECTING, StreamState.FAILED, "open_failed", "cannot decode a.mp4", None)
    assert m.state is StreamState.FAILED
    assert m.next_action(0.0) == Step(Action.DONE)


def test_a_recorded_source_ends_at_end_of_file() -> None:
    m = machine(live=False, now=0.0)
    m.opened(0.0)
    m.frame(0.1)

    t = m.ended(9.0)

    assert t == Transition("cam1", StreamState.LIVE, StreamState.ENDED, "end_of_stream", 9.0, "", None, 0)
    assert m.state is StreamState.ENDED
    assert m.finished
    assert m.next_action(9.0) == Step(Action.DONE)


def test_ended_takes_a_custom_reason() -> None:
    m = machine(live=False, now=0.0)
    m.opened(0.0)

    assert m.ended(1.0, reason="truncated").reason == "truncated"
    assert m.reason == "truncated"


def test_a_recorded_source_cannot_be_dropped() -> None:
    m = machine(live=False, now=0.0)
    m.opened(0.0)

    with pytest.raises(IllegalTransition, match="cam1"):
        m.dropped(1.0, "read_failed")
    assert m.state is StreamState.LIVE
    assert m.reconnects == 0


# -- drops and reconnects ------------------------------------------------------------


def test_a_drop_from_live_goes_to_reconnecting_with_a_backoff() -> None:
    m = live_machine(now=0.0)

    t = m.dropped(10.0, "stale", "no frame for 5 s")

    assert t == Transition("cam1", StreamState.LIVE, StreamState.RECONNECTING, "stale", 10.0,
                           "no frame for 5 s", 1.0, 1)
    assert m.state is StreamState.RECONNECTING
    assert m.reconnects == 1
    assert m.attempts == 1
    assert m.last_error == "no frame for 5 s"
    assert m.next_action(10.5) == Step(Action.WAIT, 11.0)
    assert m.next_action(11.0) == Step(Action.OPEN)


def test_reconnecting_then_opening_goes_live_again() -> None:
    m = live_machine(now=0.0)
    m.dropped(10.0, "read_failed")

    t = m.opened(11.0)

    assert (t.before, t.after, t.reason) == (StreamState.RECONNECTING, StreamState.LIVE, "opened")
    assert m.next_action(11.0) == Step(Action.READ)


def test_failed_opens_while_reconnecting_stay_reconnecting_and_keep_growing() -> None:
    m = live_machine(now=0.0)
    m.dropped(10.0, "read_failed")  # attempt 1: 1 s

    t2 = m.open_failed(11.0, "timeout")
    t3 = m.open_failed(13.0, "timeout")

    assert (t2.before, t2.after, t2.retry_in_s, t2.attempt) == (StreamState.RECONNECTING, StreamState.RECONNECTING, 2.0, 2)
    assert (t3.before, t3.after, t3.retry_in_s, t3.attempt) == (StreamState.RECONNECTING, StreamState.RECONNECTING, 4.0, 3)
    assert m.next_action(16.9) == Step(Action.WAIT, 17.0)
    assert m.reconnects == 1  # failed opens are not reconnects


def test_each_drop_counts_a_reconnect() -> None:
    m = live_machine(now=0.0)
    for i in range(3):
        m.dropped(10.0 * (i + 1), "source_ended")
        m.opened(10.0 * (i + 1) + 5)
        m.frame(10.0 * (i + 1) + 5)

    assert m.reconnects == 3


def test_the_backoff_starts_over_only_once_a_reopened_source_was_stable_for_stable_s() -> None:
    m = live_machine(now=0.0)  # stable_s 10
    m.dropped(1.0, "read_failed")        # attempt 1
    m.open_failed(2.0, "timeout")        # attempt 2
    m.open_failed(4.0, "timeout")        # attempt 3
    m.opened(8.0)

    assert m.attempts == 3  # opening alone proves nothing yet
    m.frame(8.5)
    assert (m.attempts, m.failed_opens) == (3, 0)  # a frame proves it opens, not that it works
    m.frame(17.9)
    assert m.attempts == 3
    m.frame(18.0)  # frames for stable_s after the open
    assert m.attempts == 0

    t = m.dropped(30.0, "read_failed")
    assert (t.retry_in_s, t.attempt, t.reason) == (1.0, 1, "read_failed")  # back to the first delay; not flapping


def test_the_first_frame_after_an_open_resets_the_failed_opens_that_max_attempts_counts() -> None:
    m = live_machine(now=0.0, max_attempts=3)
    m.frame(11.0)
    m.dropped(12.0, "read_failed")
    m.open_failed(13.0, "timeout")
    m.open_failed(15.0, "timeout")
    m.opened(19.0)
    m.frame(19.1)  # it opens: the failed opens start over, the backoff does not
    m.frame(19.2)

    assert (m.failed_opens, m.attempts, m.last_frame_at) == (0, 3, 19.2)
    m.dropped(20.0, "read_failed")
    assert m.open_failed(21.0, "timeout").after is StreamState.RECONNECTING  # 1 of 3, not 3 of 3


def test_a_source_that_drops_again_before_it_was_stable_is_flapping_and_stays_reconnecting() -> None:
    m = live_machine(now=0.0)
    m.frame(10.0)  # stable
    first = m.dropped(11.0, "source_ended", "the source ended the stream")
    assert (first.after, first.reason) == (StreamState.RECONNECTING, "source_ended")
    assert m.opened(12.0).after is StreamState.LIVE  # the first reopen is live: it may well be back
    m.frame(12.1)

    t = m.dropped(12.2, "source_ended", "the source ended the stream")
    assert (t.after, t.reason, t.retry_in_s) == (StreamState.RECONNECTING, "flapping", 2.0)
    assert "dropped 2 times in a row, each time before it had been up for 10 s; last: the source ended the stream" \
        in t.error
    assert m.opened(14.2) is None  # reopened, but it has proved nothing: still reconnecting, flapping
    assert (m.state, m.reason, m.next_action(14.3)) == (StreamState.RECONNECTING, "flapping", Step(Action.READ))
    m.frame(14.3)
    t = m.dropped(14.4, "read_failed")
    assert (t.before, t.after, t.reason, t.retry_in_s) == (StreamState.RECONNECTING, StreamState.RECONNECTING,
                                                            "flapping", 4.0)
    assert "dropped 3 times in a row" in t.error and m.reconnects == 3


def test_a_flapping_source_is_live_again_once_stable_and_its_backoff_starts_over() -> None:
    m = live_machine(now=0.0)
    m.frame(10.0)
    m.dropped(11.0, "read_failed")
    m.opened(12.0)
    m.dropped(12.5, "read_failed")  # flapping
    assert m.opened(15.0) is None
    assert m.frame(15.1) is None
    assert m.frame(24.9) is None  # not yet stable_s since the open

    t = m.frame(25.0)

    assert (t.before, t.after, t.reason) == (StreamState.RECONNECTING, StreamState.LIVE, "recovered")
    assert (m.attempts, m.flaps) == (0, 0)
    assert m.dropped(40.0, "read_failed").retry_in_s == 1.0


def test_a_one_frame_per_connection_source_is_knocked_on_less_and_less_often() -> None:
    """What a server that sends one frame per connection gets: a growing backoff, not a reopen every 0.5 s."""
    m = live_machine(now=0.0)
    now, opens = 0.0, 0
    while now < 90.0:
        m.frame(now)
        t = m.dropped(now + 0.1, "source_ended")
        now += 0.1 + t.retry_in_s
        m.opened(now)
        opens += 1

    assert opens <= 8  # 1 + 2 + 4 + ... seconds apart, capped at 60
    assert (m.state, m.reason) == (StreamState.RECONNECTING, "flapping")


def test_an_answer_that_needs_a_person_is_retried_slowly_with_its_own_reason() -> None:
    m = machine(now=0.0)  # slow_s: 60 by default

    t = m.open_failed(0.0, "the server answered 401 Unauthorized (check the user and password)", needs_person=True)

    assert (t.after, t.reason, t.retry_in_s) == (StreamState.CONNECTING, "needs_attention", 60.0)
    assert m.next_action(59.9) == Step(Action.WAIT, 60.0)
    t = m.open_failed(60.0, "connection refused")  # the server is down now: back to the backoff
    assert (t.reason, t.retry_in_s) == ("open_failed", 2.0)


def test_an_answer_that_needs_a_person_still_counts_towards_max_attempts() -> None:
    m = machine(now=0.0, max_attempts=2)
    m.open_failed(0.0, "404", needs_person=True)

    t = m.open_failed(60.0, "404", needs_person=True)

    assert (t.after, t.reason) == (StreamState.FAILED, "attempts_exhausted")


def test_a_flapping_source_that_opens_but_delivers_no_frame_keeps_climbing() -> None:
    m = live_machine(now=0.0)
    now = 10.0
    delays = []
    for _ in range(5):
        t = m.dropped(now, "read_failed")
        delays.append(t.retry_in_s)
        now += t.retry_in_s
        m.opened(now)  # opens, then drops again before any frame

    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert m.attempts == 5
    assert m.reconnects == 5


# -- giving up -----------------------------------------------------------------------


def test_max_attempts_exhausted_at_start_fails_with_the_attempt_count() -> None:
    m = machine(live=True, max_attempts=3, now=0.0)
    m.open_failed(0.0, "refused")
    m.open_failed(1.0, "refused")

    t = m.open_failed(3.0, "refused")

    assert t.before is StreamState.CONNECTING
    assert t.after is StreamState.FAILED
    assert t.reason == "attempts_exhausted"
    assert t.error == "refused (gave up after 3 attempts)"
    assert t.retry_in_s is None
    assert t.attempt == 3
    assert m.state is StreamState.FAILED
    assert m.reason == "attempts_exhausted"
    assert m.last_error == t.error
    assert m.next_action(1000.0) == Step(Action.DONE)


def test_max_attempts_exhausted_while_reconnecting_fails() -> None:
    m = live_machine(now=0.0, max_attempts=2)
    first = m.dropped(5.0, "read_failed", "broken pipe")
    # The drop itself is not a failed open: the first reopen may fail and the stream still tries again.
    second = m.open_failed(6.0, "refused")

    t = m.open_failed(8.0, "refused")

    assert first.after is StreamState.RECONNECTING and second.after is StreamState.RECONNECTING
    assert (t.before, t.after, t.reason) == (StreamState.RECONNECTING, StreamState.FAILED, "attempts_exhausted")
    assert "2 attempts" in t.error


def test_max_attempts_of_one_fails_on_the_first_failure_with_a_singular_message() -> None:
    m = machine(live=True, max_attempts=1, now=0.0)

    t = m.open_failed(0.0, "refused")

    assert t.after is StreamState.FAILED
    assert t.error == "refused (gave up after 1 attempt)"


def test_a_frame_between_failures_restarts_the_count_towards_max_attempts() -> None:
    m = live_machine(now=0.0, max_attempts=3)
    m.dropped(1.0, "read_failed")      # 1
    m.open_failed(2.0, "refused")      # 2
    m.opened(4.0)
    m.frame(4.5)                       # back to 0

    m.dropped(10.0, "read_failed")     # 1
    t = m.open_failed(11.0, "refused")  # 2

    assert t.after is StreamState.RECONNECTING
    assert not m.finished


def test_no_max_attempts_retries_forever() -> None:
    m = machine(live=True, max_attempts=None, now=0.0)
    for i in range(500):
        t = m.open_failed(float(i), "refused")
        assert t.after is StreamState.CONNECTING

    assert m.attempts == 500
    assert t.retry_in_s == 60.0


def test_failed_is_allowed_in_every_unfinished_state() -> None:
    connecting = machine(now=0.0)
    live = live_machine(now=0.0)
    reconnecting = live_machine(now=0.0)
    reconnecting.dropped(1.0, "read_failed")

    for m, before in ((connecting, StreamState.CONNECTING), (live, StreamState.LIVE),
                      (reconnecting, StreamState.RECONNECTING)):
        t = m.failed(2.0, "model mismatch")
        assert t == Transition("cam1", before, StreamState.FAILED, "failed", 2.0, "model mismatch", None, m.attempts)
        assert m.last_error == "model mismatch"
        assert m.finished


# -- stopping ----------------------------------------------------------------------------


def _in_state(state: StreamState) -> StreamStateMachine:
    m = machine(live=True, now=0.0)
    if state is StreamState.CONNECTING:
        return m
    m.opened(0.0)
    m.frame(0.0)
    if state is StreamState.LIVE:
        return m
    if state is StreamState.RECONNECTING:
        m.dropped(1.0, "read_failed")
        return m
    if state is StreamState.ENDED:
        m.stop(1.0)
        return m
    m.failed(1.0, "boom")
    return m


@pytest.mark.parametrize("state", [StreamState.CONNECTING, StreamState.LIVE, StreamState.RECONNECTING])
def test_stop_from_any_unfinished_state_ends_the_stream(state: StreamState) -> None:
    m = _in_state(state)

    t = m.stop(5.0)

    assert t == Transition("cam1", state, StreamState.ENDED, "stopped", 5.0, "", None, m.attempts)
    assert m.state is StreamState.ENDED
    assert m.next_action(5.0) == Step(Action.DONE)


def test_stop_takes_a_custom_reason() -> None:
    m = _in_state(StreamState.LIVE)

    assert m.stop(5.0, reason="removed").reason == "removed"
    assert m.reason == "removed"


@pytest.mark.parametrize("state", [StreamState.ENDED, StreamState.FAILED])
def test_stop_on_a_finished_stream_returns_none_and_changes_nothing(state: StreamState) -> None:
    m = _in_state(state)
    reason = m.reason

    assert m.stop(9.0) is None
    assert m.state is state
    assert m.reason == reason


# -- illegal events ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (StreamState.CONNECTING, lambda m: m.frame(1.0)),
        (StreamState.CONNECTING, lambda m: m.dropped(1.0, "read_failed")),
        (StreamState.CONNECTING, lambda m: m.ended(1.0)),
        (StreamState.LIVE, lambda m: m.opened(1.0)),
        (StreamState.LIVE, lambda m: m.open_failed(1.0, "x")),
        (StreamState.RECONNECTING, lambda m: m.frame(1.0)),
        (StreamState.RECONNECTING, lambda m: m.dropped(1.0, "read_failed")),
        (StreamState.RECONNECTING, lambda m: m.ended(1.0)),
        (StreamState.ENDED, lambda m: m.opened(1.0)),
        (StreamState.ENDED, lambda m: m.frame(1.0)),
        (StreamState.ENDED, lambda m: m.open_failed(1.0, "x")),
        (StreamState.ENDED, lambda m: m.failed(1.0, "x")),
        (StreamState.FAILED, lambda m: m.opened(1.0)),
        (StreamState.FAILED, lambda m: m.dropped(1.0, "read_failed")),
        (StreamState.FAILED, lambda m: m.ended(1.0)),
        (StreamState.FAILED, lambda m: m.failed(1.0, "x")),
    ],
)
def test_events_that_cannot_happen_in_a_state_raise_and_change_nothing(state: StreamState, event) -> None:
    m = _in_state(state)
    before = (m.state, m.attempts, m.reconnects, m.reason, m.last_error, m.last_frame_at)

    with pytest.raises(IllegalTransition, match=f"cam1.*{state.value}"):
        event(m)

    assert (m.state, m.attempts, m.reconnects, m.reason, m.last_error, m.last_frame_at) == before


def test_illegal_transition_is_a_runtime_error() -> None:
    assert issubclass(IllegalTransition, RuntimeError)


# -- staleness -----------------------------------------------------------------------------


def test_a_live_stream_is_stale_after_stale_after_s_without_a_frame() -> None:
    m = live_machine(now=0.0, stale_after_s=5.0)
    m.frame(10.0)

    assert not m.is_stale(10.0)
    assert not m.is_stale(14.999)
    assert m.is_stale(15.0)
    assert m.is_stale(100.0)


def test_each_frame_pushes_staleness_back() -> None:
    m = live_machine(now=0.0, stale_after_s=2.0)
    for t in (1.0, 2.5, 4.0, 5.5):
        m.frame(t)
        assert not m.is_stale(t + 1.9)

    assert m.is_stale(7.5)


def test_staleness_before_the_first_frame_is_measured_from_the_open() -> None:
    m = machine(live=True, now=0.0, stale_after_s=5.0)
    m.open_failed(0.0, "refused")
    m.opened(20.0)

    assert not m.is_stale(24.9)  # 20 s after the machine was made, but only 4.9 s after the open
    assert m.is_stale(25.0)


def test_a_reopened_stream_is_not_stale_right_after_the_open() -> None:
    m = live_machine(now=0.0, stale_after_s=5.0)
    m.frame(1.0)
    m.dropped(2.0, "read_failed")
    m.open_failed(3.0, "refused")
    m.opened(30.0)  # no frame since this open yet

    assert not m.is_stale(30.1)


def test_a_recorded_source_is_never_stale() -> None:
    m = machine(live=False, now=0.0, stale_after_s=1.0)
    m.opened(0.0)
    m.frame(0.5)

    assert not m.is_stale(1000.0)


@pytest.mark.parametrize("state", [StreamState.CONNECTING, StreamState.RECONNECTING,
                                   StreamState.ENDED, StreamState.FAILED])
def test_only_a_live_state_can_be_stale(state: StreamState) -> None:
    m = _in_state(state)

    assert not m.is_stale(10_000.0)


# -- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_policy_refuses_max_attempts_below_one(max_attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        ReconnectPolicy(max_attempts=max_attempts)


@pytest.mark.parametrize("stale_after_s", [0.0, -1.0, math.inf, math.nan])
def test_policy_refuses_a_stale_time_that_is_not_a_positive_number(stale_after_s: float) -> None:
    with pytest.raises(ValueError, match="stale_after_s"):
        ReconnectPolicy(stale_after_s=stale_after_s)


def test_policy_accepts_none_and_positive_limits() -> None:
    assert ReconnectPolicy(max_attempts=None).max_attempts is None
    assert ReconnectPolicy(max_attempts=1, stale_after_s=0.1).stale_after_s == 0.1


def test_jittered_retry_delays_come_from_the_injected_random_source() -> None:
    jittery = Backoff(initial_s=1.0, max_s=60.0, multiplier=2.0, jitter=0.5)
    policy = ReconnectPolicy(backoff=jittery)

    def delays(seed: int) -> list[float]:
        m = StreamStateMachine("cam1", live=True, policy=policy, rng=random.Random(seed), now=0.0)
        return [m.open_failed(float(i), "x").retry_in_s for i in range(6)]

    assert delays(11) == delays(11)
    assert delays(11) != delays(12)
    for n, d in enumerate(delays(11), start=1):
        base = min(60.0, 2.0 ** (n - 1))
        assert base * 0.5 - 1e-12 <= d <= base * 1.5 + 1e-12


def test_transitions_name_their_stream() -> None:
    m = machine(name="door-left", now=0.0)

    assert m.opened(0.0).stream == "door-left"
    with pytest.raises(IllegalTransition, match="door-left"):
        m.opened(1.0)
