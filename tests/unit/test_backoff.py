"""Backoff: exponential delay per attempt, capped at max_s, with ±jitter from an injected RNG."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.backoff import Backoff, BackoffConfigError


def test_delays_without_jitter_double_per_attempt_and_stop_at_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, jitter=0.0)
    rng = random.Random(1)

    delays = [backoff.delay(n, rng) for n in range(1, 10)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_base_delay_is_initial_times_multiplier_to_the_attempt_minus_one() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1000.0, multiplier=3.0, jitter=0.5)

    assert backoff.base_delay(1) == pytest.approx(0.1)
    assert backoff.base_delay(2) == pytest.approx(0.3)
    assert backoff.base_delay(5) == pytest.approx(0.1 * 3.0**4)


def test_multiplier_of_one_gives_a_constant_delay() -> None:
    backoff = Backoff(initial_s=2.0, max_s=5.0, multiplier=1.0, jitter=0.0)

    assert [backoff.delay(n, random.Random(0)) for n in (1, 2, 50, 5000)] == [2.0, 2.0, 2.0, 2.0]


def test_zero_jitter_delay_does_not_depend_on_the_random_source() -> None:
    backoff = Backoff(initial_s=0.25, max_s=8.0, multiplier=2.0, jitter=0.0)

    for seed in range(20):
        assert backoff.delay(3, random.Random(seed)) == 1.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 7, 8, 20])
def test_jittered_delay_stays_within_its_share_of_the_base_and_never_exceeds_max(attempt: int) -> None:
    backoff = Backoff(initial_s=0.5, max_s=10.0, multiplier=2.0, jitter=0.2)
    base = backoff.base_delay(attempt)
    rng = random.Random(1234 + attempt)

    delays = [backoff.delay(attempt, rng) for _ in range(2000)]

    assert max(delays) <= backoff.max_s
    assert min(delays) >= base * (1 - backoff.jitter) - 1e-12
    assert max(delays) <= base * (1 + backoff.jitter) + 1e-12


def test_jitter_actually_spreads_the_delays_on_both_sides_of_the_base() -> None:
    backoff = Backoff(initial_s=1.0, max_s=100.0, multiplier=2.0, jitter=0.2)
    rng = random.Random(7)

    delays = [backoff.delay(3, rng) for _ in range(2000)]  # base 4.0, below the cap

    assert len(set(delays)) > 1000
    assert min(delays) < 4.0 * 0.9  # reaches well into the lower share
    assert max(delays) > 4.0 * 1.1  # and well into the upper share


def test_jitter_at_the_cap_only_moves_the_delay_down() -> None:
    backoff = Backoff(initial_s=1.0, max_s=10.0, multiplier=2.0, jitter=0.3)
    rng = random.Random(99)

    delays = [backoff.delay(30, rng) for _ in range(2000)]

    assert all(7.0 - 1e-12 <= d <= 10.0 for d in delays)
    assert min(delays) < 8.0  # some draws really were moved down from the cap


def test_full_jitter_never_goes_below_zero() -> None:
    backoff = Backoff(initial_s=1.0, max_s=4.0, multiplier=2.0, jitter=1.0)
    rng = random.Random(5)

    delays = [backoff.delay(n, rng) for n in range(1, 6) for _ in range(500)]

    assert all(0.0 <= d <= 4.0 for d in delays)


def test_same_seed_gives_the_same_delays() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, jitter=0.2)

    first = [backoff.delay(n, random.Random(42)) for n in range(1, 12)]
    second = [backoff.delay(n, random.Random(42)) for n in range(1, 12)]

    assert first == second


@pytest.mark.parametrize("attempt", [1025, 5000, 10**6, 10**18, 10**100])
@pytest.mark.parametrize("multiplier", [2, 2.0, 10.0, 1.5, 1e300])
def test_huge_attempt_numbers_do_not_overflow_and_return_the_cap(attempt: int, multiplier: float) -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, multiplier=multiplier, jitter=0.2)

    assert backoff.base_delay(attempt) == 30.0
    delay = backoff.delay(attempt, random.Random(3))
    assert math.isfinite(delay)
    assert 30.0 * 0.8 - 1e-12 <= delay <= 30.0


def test_zero_initial_delay_stays_zero_even_for_huge_attempts() -> None:
    backoff = Backoff(initial_s=0.0, max_s=10.0, multiplier=2.0, jitter=0.0)

    assert backoff.base_delay(1025) == 0.0


def test_zero_initial_delay_is_zero_for_ordinary_attempts() -> None:
    backoff = Backoff(initial_s=0.0, max_s=10.0, multiplier=2.0, jitter=0.5)

    assert [backoff.delay(n, random.Random(n)) for n in range(1, 30)] == [0.0] * 29


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempts_count_from_one(attempt: int) -> None:
    backoff = Backoff()

    with pytest.raises(ValueError, match="attempt counts from 1"):
        backoff.base_delay(attempt)
    with pytest.raises(ValueError, match="attempt counts from 1"):
        backoff.delay(attempt, random.Random(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_s": -0.1}, "initial_s"),
        ({"initial_s": 5.0, "max_s": 4.0}, "max_s"),
        ({"max_s": -1.0, "initial_s": 0.0}, "max_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"multiplier": 0.0}, "multiplier"),
        ({"multiplier": -2.0}, "multiplier"),
        ({"jitter": -0.01}, "jitter"),
        ({"jitter": 1.01}, "jitter"),
        ({"initial_s": math.nan}, "initial_s"),
        ({"max_s": math.inf}, "max_s"),
        ({"multiplier": math.inf}, "multiplier"),
        ({"jitter": math.nan}, "jitter"),
        ({"initial_s": True}, "initial_s"),
        ({"jitter": False}, "jitter"),
        ({"max_s": "30"}, "max_s"),
        ({"multiplier": None}, "multiplier"),
    ],
)
def test_bounds_that_cannot_work_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(BackoffConfigError, match=message):
        Backoff(**kwargs)


def test_backoff_config_error_is_a_value_error() -> None:
    assert issubclass(BackoffConfigError, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0, "max_s": 0.0},
        {"initial_s": 3.0, "max_s": 3.0},
        {"multiplier": 1.0},
        {"jitter": 0.0},
        {"jitter": 1.0},
        {"initial_s": 1, "max_s": 60, "multiplier": 3, "jitter": 0},
    ],
)
def test_edge_values_that_still_work_are_accepted(kwargs: dict) -> None:
    backoff = Backoff(**kwargs)

    assert 0.0 <= backoff.delay(1, random.Random(0)) <= backoff.max_s
