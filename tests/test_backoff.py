"""Retry delays, ``django_alarms.backoff.Backoff``: pure, no database."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest

from django_alarms.backoff import Backoff
from django_alarms.exceptions import InvalidAlarm

SEEDS = range(200)


def seconds(delay: timedelta) -> float:
    return delay.total_seconds()


# -- the worked example of the docstring ----------------------------------------------------


def test_the_defaults_are_those_of_the_worked_example():
    assert Backoff() == Backoff(base=10, factor=2, max=3600, jitter=0.1)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, 10),
        (2, 20),
        (3, 40),
        (4, 80),
        (8, 1280),
        (9, 2560),
        (10, 3600),
        (11, 3600),
        (50, 3600),
    ],
)
def test_without_jitter_the_delay_doubles_from_base_up_to_the_cap(attempt, expected):
    assert Backoff(jitter=0).delay(attempt) == timedelta(seconds=expected)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (1, 9, 11),
        (2, 18, 22),
        (3, 36, 44),
        (9, 2304, 2816),
        (10, 3240, 3600),
        (20, 3240, 3600),
    ],
)
def test_with_jitter_the_delay_stays_within_ten_percent_and_the_cap(attempt, low, high):
    delays = [seconds(Backoff().delay(attempt, rng=random.Random(seed))) for seed in SEEDS]

    assert low <= min(delays)
    assert max(delays) <= high
    # Jitter spreads alarms that failed together: they do not all come back at once.
    assert len(set(delays)) > len(SEEDS) // 2


def test_the_same_seed_gives_the_same_delay():
    policy = Backoff()

    first = [policy.delay(n, rng=random.Random(7)) for n in range(1, 12)]
    again = [policy.delay(n, rng=random.Random(7)) for n in range(1, 12)]

    assert first == again


def test_jitter_is_drawn_from_the_rng_it_is_given():
    rng = random.Random(3)
    expected = 10 * random.Random(3).uniform(0.9, 1.1)

    assert seconds(Backoff().delay(1, rng=rng)) == pytest.approx(expected)


def test_full_jitter_stays_between_zero_and_the_cap():
    policy = Backoff(base=100, max=150, jitter=1)

    delays = [seconds(policy.delay(n, rng=random.Random(seed))) for seed in SEEDS for n in (1, 5)]

    assert min(delays) >= 0
    assert max(delays) <= 150


@pytest.mark.parametrize("attempt", [0, -3])
def test_an_attempt_below_one_counts_as_the_first(attempt):
    assert Backoff(jitter=0).delay(attempt) == timedelta(seconds=10)


@pytest.mark.parametrize("attempt", [1_100, 100_000])
def test_a_huge_attempt_number_is_capped_without_overflow(attempt):
    assert Backoff(jitter=0).delay(attempt) == timedelta(hours=1)
    assert seconds(Backoff().delay(attempt, rng=random.Random(1))) <= 3600


def test_a_factor_of_one_is_a_constant_delay():
    policy = Backoff(base=30, factor=1, jitter=0)

    assert {policy.delay(n) for n in range(1, 20)} == {timedelta(seconds=30)}


def test_base_and_max_may_be_timedeltas():
    policy = Backoff(base=timedelta(seconds=5), max=timedelta(minutes=1), jitter=0)

    assert (policy.base, policy.max) == (5.0, 60.0)
    assert [seconds(policy.delay(n)) for n in range(1, 6)] == [5, 10, 20, 40, 60]


def test_a_zero_base_never_waits():
    assert Backoff(base=0).delay(3, rng=random.Random(1)) == timedelta(0)


# -- Backoff.coerce -------------------------------------------------------------------------


def test_coerce_returns_a_backoff_as_it_is():
    policy = Backoff(base=1)

    assert Backoff.coerce(policy) is policy


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, Backoff()),
        ({"base": 5}, Backoff(base=5)),
        ({"base": 5, "factor": 3, "max": 600, "jitter": 0}, Backoff(5, 3, 600, 0)),
        ({"max": timedelta(minutes=2)}, Backoff(max=120)),
    ],
    ids=["empty", "base", "every-field", "timedelta-max"],
)
def test_coerce_builds_a_backoff_from_a_dict_of_its_fields(value, expected):
    assert Backoff.coerce(value) == expected


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param({"bogus": 1}, "backoff", id="unknown-key"),
        pytest.param({"base": 1, "retries": 3}, "backoff", id="unknown-key-among-known"),
        pytest.param("fast", "backoff", id="string"),
        pytest.param(10, "backoff", id="number"),
        pytest.param(None, "backoff", id="none"),
        pytest.param([10, 2], "backoff", id="list"),
        pytest.param({"base": -1}, "backoff.base", id="negative-base"),
        pytest.param({"base": "10"}, "backoff.base", id="string-base"),
        pytest.param({"base": True}, "backoff.base", id="bool-base"),
        pytest.param({"base": math.nan}, "backoff.base", id="nan-base"),
        pytest.param({"max": -1}, "backoff.max", id="negative-max"),
        pytest.param({"max": timedelta(seconds=-1)}, "backoff.max", id="negative-max-timedelta"),
        pytest.param({"max": math.nan}, "backoff.max", id="nan-max"),
        pytest.param({"factor": 0.5}, "backoff.factor", id="factor-below-one"),
        pytest.param({"factor": "2"}, "backoff.factor", id="string-factor"),
        pytest.param({"factor": math.nan}, "backoff.factor", id="nan-factor"),
        pytest.param({"jitter": 1.5}, "backoff.jitter", id="jitter-above-one"),
        pytest.param({"jitter": -0.1}, "backoff.jitter", id="negative-jitter"),
        pytest.param({"jitter": math.nan}, "backoff.jitter", id="nan-jitter"),
        pytest.param({"jitter": False}, "backoff.jitter", id="bool-jitter"),
    ],
)
def test_coerce_rejects_bad_values_naming_the_field(value, field):
    with pytest.raises(InvalidAlarm) as raised:
        Backoff.coerce(value)

    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(f"{field}=")
