"""StageRestarts: restart a dead stage after a growing delay; give up on fatal errors and crash loops."""

from __future__ import annotations

import random

import pytest

from pipeline.backoff import Backoff
from pipeline.supervision.restart import RestartDecision, RestartPolicy, StageRestarts

EXACT = Backoff(initial_s=0.2, max_s=10.0, multiplier=2.0, jitter=0.0)


def restarts(max_restarts: int = 5, window_s: float = 60.0, backoff: Backoff = EXACT, seed: int = 0) -> StageRestarts:
    return StageRestarts(RestartPolicy(backoff=backoff, max_restarts=max_restarts, window_s=window_s),
                         random.Random(seed))


def test_a_dead_stage_is_restarted_after_a_delay_that_grows_with_each_death() -> None:
    r = restarts(max_restarts=10)

    decisions = [r.on_exit("embed", now=float(t)) for t in range(6)]

    assert all(d.restart for d in decisions)
    assert [d.delay_s for d in decisions] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4])
    assert all(d.reason == "" for d in decisions)


def test_the_delay_is_capped_by_the_backoff() -> None:
    r = restarts(max_restarts=20)

    decisions = [r.on_exit("embed", now=float(t)) for t in range(12)]

    assert decisions[-1].delay_s == 10.0
    assert max(d.delay_s for d in decisions) == 10.0


def test_a_fatal_exit_gives_up_at_once_with_the_error() -> None:
    r = restarts()

    d = r.on_exit("embed", now=0.0, fatal=True, error="engine tensorrt cannot run here")

    assert d == RestartDecision(False, 0.0, "stage embed cannot run: engine tensorrt cannot run here")
    assert r.total["embed"] == 0


def test_a_fatal_exit_is_not_counted_as_a_death() -> None:
    r = restarts(max_restarts=10)
    r.on_exit("embed", now=0.0, fatal=True, error="x")

    d = r.on_exit("embed", now=1.0)

    assert d.restart
    assert d.delay_s == pytest.approx(0.2)  # first death in the window


def test_more_than_max_restarts_deaths_within_the_window_is_a_crash_loop() -> None:
    r = restarts(max_restarts=3, window_s=60.0)
    allowed = [r.on_exit("capture-0", now=t) for t in (0.0, 10.0, 20.0)]

    d = r.on_exit("capture-0", now=30.0, error="segfault")

    assert all(a.restart for a in allowed)
    assert d.restart is False
    assert d.delay_s == 0.0
    assert d.reason == "stage capture-0 died 4 times within 60 s; last error: segfault"


def test_the_crash_loop_message_leaves_out_an_empty_error() -> None:
    r = restarts(max_restarts=1, window_s=30.0)
    r.on_exit("temporal", now=0.0)

    d = r.on_exit("temporal", now=1.0)

    assert not d.restart
    assert d.reason == "stage temporal died 2 times within 30 s"


def test_exactly_max_restarts_deaths_within_the_window_still_restart() -> None:
    r = restarts(max_restarts=5)

    decisions = [r.on_exit("embed", now=float(t)) for t in range(5)]

    assert all(d.restart for d in decisions)
    assert r.on_exit("embed", now=5.0).restart is False


def test_deaths_older_than_the_window_are_forgotten() -> None:
    r = restarts(max_restarts=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        assert r.on_exit("embed", now=t).restart

    d = r.on_exit("embed", now=200.0)

    assert d.restart
    assert d.delay_s == pytest.approx(0.2)  # the delay starts over too


def test_only_the_deaths_that_left_the_window_are_forgotten() -> None:
    r = restarts(max_restarts=3, window_s=60.0)
    r.on_exit("embed", now=0.0)
    r.on_exit("embed", now=50.0)
    r.on_exit("embed", now=55.0)

    d = r.on_exit("embed", now=65.0)  # 0.0 has left the window; 50, 55 and 65 remain

    assert d.restart
    assert d.delay_s == pytest.approx(0.8)  # third death in the window
    assert r.on_exit("embed", now=70.0).restart is False  # 50, 55, 65, 70: four within 60 s


def test_a_death_exactly_window_s_ago_still_counts() -> None:
    r = restarts(max_restarts=1, window_s=60.0)
    r.on_exit("embed", now=0.0)

    assert r.on_exit("embed", now=60.0).restart is False


def test_stages_are_counted_separately() -> None:
    r = restarts(max_restarts=2)
    r.on_exit("embed", now=0.0)
    r.on_exit("embed", now=1.0)

    other = r.on_exit("capture-0", now=2.0)

    assert other.restart
    assert other.delay_s == pytest.approx(0.2)
    assert r.on_exit("embed", now=3.0).restart is False


def test_total_counts_restarts_only() -> None:
    r = restarts(max_restarts=2)
    r.on_exit("embed", now=0.0)
    r.on_exit("embed", now=1.0)
    r.on_exit("embed", now=2.0)  # gives up: crash loop
    r.on_exit("embed", now=3.0, fatal=True, error="x")  # gives up: fatal
    r.on_exit("capture-0", now=4.0)

    assert r.total["embed"] == 2
    assert r.total["capture-0"] == 1
    assert r.total["temporal"] == 0


def test_jittered_restart_delays_come_from_the_injected_random_source() -> None:
    jittery = Backoff(initial_s=1.0, max_s=100.0, multiplier=2.0, jitter=0.2)

    def delays(seed: int) -> list[float]:
        r = restarts(max_restarts=10, backoff=jittery, seed=seed)
        return [r.on_exit("embed", now=float(t)).delay_s for t in range(5)]

    assert delays(3) == delays(3)
    assert delays(3) != delays(4)
    for n, d in enumerate(delays(3), start=1):
        assert 2.0 ** (n - 1) * 0.8 - 1e-12 <= d <= 2.0 ** (n - 1) * 1.2 + 1e-12

