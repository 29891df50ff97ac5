"""Cron's day-of-month / day-of-week rule, and schedules that reach the end of time."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_alarms.exceptions import InvalidAlarm
from django_alarms.recurrence import HORIZON, Days, build

UTC = timezone.utc
START = datetime(2025, 1, 1, tzinfo=UTC)


def _days(cron: str, count: int) -> list[str]:
    recurrence = build(cron=cron, timezone="UTC", start_at=START)
    return [when.date().isoformat() for when in recurrence.upcoming(START, count)]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        # the 1st, or the first Monday
        ("0 0 1 * 1#1", ["2025-01-06", "2025-02-01", "2025-02-03", "2025-03-01", "2025-03-03"]),
        # the 1st, or the second Monday
        ("0 0 1 * 1#2", ["2025-01-13", "2025-02-01", "2025-02-10", "2025-03-01", "2025-03-10"]),
        # the last day, or the second Monday
        ("0 0 L * 1#2", ["2025-01-13", "2025-01-31", "2025-02-10", "2025-02-28", "2025-03-10"]),
        # a field starting with * is unrestricted: odd days that are Mondays
        ("0 0 */2 * 1", ["2025-01-13", "2025-01-27", "2025-02-03", "2025-02-17", "2025-03-03"]),
    ],
)
def test_day_of_month_or_day_of_week(cron: str, expected: list[str]) -> None:
    assert _days(cron, 5) == expected


def test_never_matching_is_rejected() -> None:
    with pytest.raises(InvalidAlarm, match="never matches"):
        build(cron="0 0 30 2 *", timezone="UTC", start_at=START)


@pytest.mark.parametrize(
    "schedule",
    [{"cron": "0 0 31 12 *"}, {"every": timedelta(days=3000)}, {"rate": Days(7)}],
)
def test_the_schedule_ends_at_the_horizon(schedule: dict[str, object]) -> None:
    start = datetime(9999, 12, 1, tzinfo=UTC)
    recurrence = build(timezone="Etc/GMT+12", start_at=start, misfire="all", **schedule)
    first = recurrence.first()
    assert first is None or first <= HORIZON
    late = datetime(9999, 12, 29, 23, tzinfo=UTC)
    assert recurrence.next_after(late) is None
    assert recurrence.ends_by_horizon(late)
    assert all(when <= HORIZON for when in recurrence.upcoming(start, 10))
    if first is not None:
        decision = recurrence.catch_up(first, datetime(9999, 12, 31, 23, tzinfo=UTC))
        assert decision.resume is None or decision.resume <= HORIZON


@settings(max_examples=30, deadline=None)
@given(
    day=st.sampled_from(["*", "*/2", "1", "13", "L", "1-5", "15W", "?"]),
    weekday=st.sampled_from(["*", "*/2", "1", "MON-FRI", "1#2", "L5", "?"]),
    zone=st.sampled_from(["UTC", "Europe/Paris", "Australia/Adelaide", "Etc/GMT+12"]),
    after=st.datetimes(datetime(2000, 1, 1), datetime(9999, 12, 1), timezones=st.just(UTC)),
)
def test_cron_iteration_is_increasing_and_ends(
    day: str, weekday: str, zone: str, after: datetime
) -> None:
    if day == "?" and weekday == "?":
        return
    recurrence = build(cron=f"0 3 {day} * {weekday}", timezone=zone, start_at=START)
    found = recurrence.upcoming(after, 20)
    assert all(when.tzinfo is not None and after < when <= HORIZON for when in found)
    assert all(a < b for a, b in itertools.pairwise(found))


def test_walks_of_one_expression_at_the_same_time_never_share_an_iterator() -> None:
    """Walks borrow croniter objects from a per-thread pool: two of one expression at once,
    interleaved, each give what a walk of its own gives."""
    schedule = build(cron="*/7 9-17 * * 1-5", timezone="Europe/Paris", start_at=START)
    first, second = START, START + timedelta(days=3, hours=5)
    expected_a = schedule.upcoming(first, 6)
    expected_b = schedule.upcoming(second, 6)
    walk_a, walk_b = schedule._ascending(first), schedule._ascending(second)
    got_a, got_b = [], []
    for _ in range(6):
        got_a.append(next(walk_a))
        got_b.append(next(walk_b))
    assert (got_a, got_b) == (expected_a, expected_b)
    walk_a.close()
    walk_b.close()
    assert schedule.upcoming(first, 6) == expected_a, "and after they went back to the pool"
