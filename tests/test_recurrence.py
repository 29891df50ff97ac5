"""Tests for django_alarms.recurrence: pure, no database."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from django_alarms.exceptions import InvalidAlarm
from django_alarms.recurrence import (
    MAX_CATCH_UP,
    MISFIRE_POLICIES,
    CatchUp,
    Daily,
    Days,
    Hours,
    Minutes,
    Rate,
    Recurrence,
    Weekdays,
    WeekdaysAndSaturday,
    build,
)

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
ADELAIDE = ZoneInfo("Australia/Adelaide")
KOLKATA = ZoneInfo("Asia/Kolkata")
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def z(text: str) -> datetime:
    """An aware UTC datetime from ``"2025-03-30T01:00"`` (seconds optional)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def zs(*texts: str) -> list[datetime]:
    return [z(text) for text in texts]


# --------------------------------------------------------------------------------------------
# Cron expressions


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        pytest.param(
            "@yearly", "2025-01-15T12:00", ["2026-01-01T00:00", "2027-01-01T00:00"], id="yearly"
        ),
        pytest.param(
            "@annually", "2025-01-15T12:00", ["2026-01-01T00:00", "2027-01-01T00:00"], id="annually"
        ),
        pytest.param(
            "@monthly", "2025-01-15T12:00", ["2025-02-01T00:00", "2025-03-01T00:00"], id="monthly"
        ),
        pytest.param(
            "@weekly",
            "2025-01-15T12:00",
            ["2025-01-19T00:00", "2025-01-26T00:00"],
            id="weekly-sunday",
        ),
        pytest.param(
            "@daily", "2025-01-15T12:00", ["2025-01-16T00:00", "2025-01-17T00:00"], id="daily"
        ),
        pytest.param(
            "@midnight", "2025-01-15T12:00", ["2025-01-16T00:00", "2025-01-17T00:00"], id="midnight"
        ),
        pytest.param(
            "@hourly", "2025-01-15T12:00", ["2025-01-15T13:00", "2025-01-15T14:00"], id="hourly"
        ),
        pytest.param(
            "@DAILY",
            "2025-01-15T12:00",
            ["2025-01-16T00:00", "2025-01-17T00:00"],
            id="macro-upper-case",
        ),
    ],
)
def test_cron_macros(cron: str, after: str, expected: list[str]) -> None:
    recurrence = build(cron=cron, timezone="UTC", start_at=EPOCH)
    assert recurrence.upcoming(z(after), len(expected)) == zs(*expected)


def test_macro_is_stored_in_lower_case() -> None:
    assert build(cron=" @Daily ", timezone="UTC").cron == "@daily"


def test_macro_is_evaluated_in_the_time_zone() -> None:
    recurrence = build(cron="@daily", timezone="Europe/Paris", start_at=EPOCH)
    assert recurrence.upcoming(z("2025-01-15T12:00"), 2) == zs(
        "2025-01-15T23:00", "2025-01-16T23:00"
    )


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        pytest.param(
            "*/10 * * * * *",
            "UTC",
            "2025-01-01T09:00:05",
            ["2025-01-01T09:00:10", "2025-01-01T09:00:20", "2025-01-01T09:00:30"],
            id="seconds-first-every-10-seconds",
        ),
        pytest.param(
            "30 0 9 * * 1-5",
            "UTC",
            "2025-01-03T10:00",  # a Friday
            ["2025-01-06T09:00:30", "2025-01-07T09:00:30"],
            id="seconds-first-weekdays-09:00:30",
        ),
        pytest.param(
            "0,30 * * * * *",
            "UTC",
            "2025-01-01T09:00:00",
            ["2025-01-01T09:00:30", "2025-01-01T09:01:00", "2025-01-01T09:01:30"],
            id="seconds-first-list",
        ),
        pytest.param(
            "0 9 * * MON-FRI",
            "UTC",
            "2025-01-03T10:00",
            ["2025-01-06T09:00", "2025-01-07T09:00"],
            id="day-names-range",
        ),
        pytest.param(
            "0 9 * * mon,wed",
            "UTC",
            "2025-01-01T10:00",
            ["2025-01-06T09:00", "2025-01-08T09:00"],
            id="day-names-lower-case-list",
        ),
        pytest.param(
            "0 0 1 JAN,JUL *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-07-01T00:00", "2026-01-01T00:00"],
            id="month-names",
        ),
        pytest.param(
            "0 8-10 * * *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-01T08:00", "2025-01-01T09:00", "2025-01-01T10:00", "2025-01-02T08:00"],
            id="hour-range",
        ),
        pytest.param(
            "*/20 9 * * *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-01T09:00", "2025-01-01T09:20", "2025-01-01T09:40", "2025-01-02T09:00"],
            id="minute-step",
        ),
        pytest.param(
            "5-10/5 * * * *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-01T00:05", "2025-01-01T00:10", "2025-01-01T01:05"],
            id="range-with-step",
        ),
        pytest.param(
            "0 */6 * * *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-01T06:00", "2025-01-01T12:00", "2025-01-01T18:00", "2025-01-02T00:00"],
            id="hour-step",
        ),
        pytest.param(
            "0 9,12,18 * * *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-01T09:00", "2025-01-01T12:00", "2025-01-01T18:00", "2025-01-02T09:00"],
            id="hour-list",
        ),
        pytest.param(
            "15,45 * * * *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-01T00:15", "2025-01-01T00:45", "2025-01-01T01:15"],
            id="minute-list",
        ),
        pytest.param(
            "0 0 * * 7",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-05T00:00", "2025-01-12T00:00"],
            id="sunday-as-7",
        ),
        pytest.param(
            "0 0 ? * SUN",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-05T00:00", "2025-01-12T00:00"],
            id="question-mark",
        ),
        pytest.param(
            "0 9 * * 1#2",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-13T09:00", "2025-02-10T09:00"],
            id="second-monday",
        ),
        pytest.param(
            "0 0 29 2 *",
            "UTC",
            "2025-01-01T00:00",
            ["2028-02-29T00:00", "2032-02-29T00:00"],
            id="leap-day",
        ),
        pytest.param(
            "0 0 31 * *",
            "UTC",
            "2025-01-31T00:00",
            ["2025-03-31T00:00", "2025-05-31T00:00", "2025-07-31T00:00", "2025-08-31T00:00"],
            id="day-31-skips-short-months",
        ),
        pytest.param(
            "0 0 L * *",
            "UTC",
            "2025-01-01T00:00",
            ["2025-01-31T00:00", "2025-02-28T00:00", "2025-03-31T00:00", "2025-04-30T00:00"],
            id="last-day-of-month",
        ),
        pytest.param(
            "0 0 L * *",
            "UTC",
            "2028-02-01T00:00",
            ["2028-02-29T00:00", "2028-03-31T00:00"],
            id="last-day-of-leap-february",
        ),
        pytest.param(
            "0 9 * * *",
            "Asia/Kolkata",
            "2025-01-01T00:00",
            ["2025-01-01T03:30", "2025-01-02T03:30"],
            id="kolkata-half-hour-offset",
        ),
        pytest.param(
            "0 * * * *",
            "Asia/Kolkata",
            "2025-01-01T00:00",
            ["2025-01-01T00:30", "2025-01-01T01:30"],
            id="kolkata-hourly-on-the-half-hour-utc",
        ),
        pytest.param(
            "0 9 * * *",
            "Australia/Adelaide",
            "2025-01-01T00:00",  # summer: +10:30
            ["2025-01-01T22:30", "2025-01-02T22:30"],
            id="adelaide-summer",
        ),
        pytest.param(
            "0 9 * * *",
            "Australia/Adelaide",
            "2025-07-01T00:00",  # winter: +09:30
            ["2025-07-01T23:30", "2025-07-02T23:30"],
            id="adelaide-winter",
        ),
        pytest.param(
            "0 17 * * 1-5",
            "Europe/Paris",
            "2025-01-03T17:00",
            ["2025-01-06T16:00", "2025-01-07T16:00"],
            id="paris-winter",
        ),
        pytest.param(
            "0 17 * * 1-5",
            "Europe/Paris",
            "2025-07-04T17:00",
            ["2025-07-07T15:00", "2025-07-08T15:00"],
            id="paris-summer",
        ),
    ],
)
def test_cron_occurrences(cron: str, tz: str, after: str, expected: list[str]) -> None:
    recurrence = build(cron=cron, timezone=tz, start_at=EPOCH)
    assert recurrence.upcoming(z(after), len(expected)) == zs(*expected)
    assert recurrence.next_after(z(after)) == z(expected[0])


# --------------------------------------------------------------------------------------------
# Daylight saving time
#
# 2025 transitions, in UTC:
#   Europe/Paris        gap 03-30 01:00 (02:00 -> 03:00)   overlap 10-26 01:00 (03:00 -> 02:00)
#   America/New_York    gap 03-09 07:00 (02:00 -> 03:00)   overlap 11-02 06:00 (02:00 -> 01:00)
#   Australia/Sydney    gap 10-04 16:00 (02:00 -> 03:00)   overlap 04-05 16:00 (03:00 -> 02:00)
#   Australia/Adelaide  gap 10-04 16:30 (02:00 -> 03:00)   overlap 04-05 16:30 (03:00 -> 02:00)

HOURLY = "0 * * * *"
QUARTER = "*/15 * * * *"
AT_0230 = "30 2 * * *"

DST_CASES = [
    # Europe/Paris
    pytest.param(
        HOURLY,
        "Europe/Paris",
        "2025-03-29T23:30",
        ["2025-03-30T00:00", "2025-03-30T01:00", "2025-03-30T02:00", "2025-03-30T03:00"],
        id="paris-gap-hourly",
    ),
    pytest.param(
        QUARTER,
        "Europe/Paris",
        "2025-03-30T00:30",
        ["2025-03-30T00:45", "2025-03-30T01:00", "2025-03-30T01:15", "2025-03-30T01:30"],
        id="paris-gap-quarter",
    ),
    pytest.param(
        AT_0230,
        "Europe/Paris",
        "2025-03-29T02:00",
        ["2025-03-30T01:00", "2025-03-31T00:30", "2025-04-01T00:30"],
        id="paris-gap-daily-0230",
    ),
    pytest.param(
        HOURLY,
        "Europe/Paris",
        "2025-10-25T23:30",
        ["2025-10-26T00:00", "2025-10-26T02:00", "2025-10-26T03:00"],
        id="paris-overlap-hourly",
    ),
    pytest.param(
        QUARTER,
        "Europe/Paris",
        "2025-10-26T00:40",
        ["2025-10-26T00:45", "2025-10-26T02:00", "2025-10-26T02:15"],
        id="paris-overlap-quarter",
    ),
    pytest.param(
        AT_0230,
        "Europe/Paris",
        "2025-10-25T12:00",
        ["2025-10-26T00:30", "2025-10-27T01:30"],
        id="paris-overlap-daily-0230",
    ),
    # America/New_York
    pytest.param(
        HOURLY,
        "America/New_York",
        "2025-03-09T05:30",
        ["2025-03-09T06:00", "2025-03-09T07:00", "2025-03-09T08:00"],
        id="new-york-gap-hourly",
    ),
    pytest.param(
        QUARTER,
        "America/New_York",
        "2025-03-09T06:40",
        ["2025-03-09T06:45", "2025-03-09T07:00", "2025-03-09T07:15"],
        id="new-york-gap-quarter",
    ),
    pytest.param(
        AT_0230,
        "America/New_York",
        "2025-03-08T12:00",
        ["2025-03-09T07:00", "2025-03-10T06:30"],
        id="new-york-gap-daily-0230",
    ),
    pytest.param(
        HOURLY,
        "America/New_York",
        "2025-11-02T04:30",
        ["2025-11-02T05:00", "2025-11-02T07:00", "2025-11-02T08:00"],
        id="new-york-overlap-hourly",
    ),
    pytest.param(
        QUARTER,
        "America/New_York",
        "2025-11-02T05:40",
        ["2025-11-02T05:45", "2025-11-02T07:00", "2025-11-02T07:15"],
        id="new-york-overlap-quarter",
    ),
    pytest.param(
        "30 1 * * *",
        "America/New_York",
        "2025-11-01T12:00",
        ["2025-11-02T05:30", "2025-11-03T06:30"],
        id="new-york-overlap-daily-0130",
    ),
    # Australia/Sydney: the southern hemisphere springs forward in October
    pytest.param(
        HOURLY,
        "Australia/Sydney",
        "2025-10-04T14:30",
        ["2025-10-04T15:00", "2025-10-04T16:00", "2025-10-04T17:00"],
        id="sydney-gap-hourly",
    ),
    pytest.param(
        QUARTER,
        "Australia/Sydney",
        "2025-10-04T15:40",
        ["2025-10-04T15:45", "2025-10-04T16:00", "2025-10-04T16:15"],
        id="sydney-gap-quarter",
    ),
    pytest.param(
        AT_0230,
        "Australia/Sydney",
        "2025-10-04T00:00",
        ["2025-10-04T16:00", "2025-10-05T15:30"],
        id="sydney-gap-daily-0230",
    ),
    pytest.param(
        HOURLY,
        "Australia/Sydney",
        "2025-04-05T13:30",
        ["2025-04-05T14:00", "2025-04-05T15:00", "2025-04-05T17:00"],
        id="sydney-overlap-hourly",
    ),
    pytest.param(
        QUARTER,
        "Australia/Sydney",
        "2025-04-05T15:40",
        ["2025-04-05T15:45", "2025-04-05T17:00", "2025-04-05T17:15"],
        id="sydney-overlap-quarter",
    ),
    pytest.param(
        AT_0230,
        "Australia/Sydney",
        "2025-04-05T00:00",
        ["2025-04-05T15:30", "2025-04-06T16:30"],
        id="sydney-overlap-daily-0230",
    ),
    # Australia/Adelaide: half-hour offsets and DST
    pytest.param(
        HOURLY,
        "Australia/Adelaide",
        "2025-10-04T15:00",
        ["2025-10-04T15:30", "2025-10-04T16:30", "2025-10-04T17:30"],
        id="adelaide-gap-hourly",
    ),
    pytest.param(
        AT_0230,
        "Australia/Adelaide",
        "2025-10-04T00:00",
        ["2025-10-04T16:30", "2025-10-05T16:00"],
        id="adelaide-gap-daily-0230",
    ),
    pytest.param(
        HOURLY,
        "Australia/Adelaide",
        "2025-04-05T14:00",
        ["2025-04-05T14:30", "2025-04-05T15:30", "2025-04-05T17:30"],
        id="adelaide-overlap-hourly",
    ),
]


@pytest.mark.parametrize(("cron", "tz", "after", "expected"), DST_CASES)
def test_cron_across_dst(cron: str, tz: str, after: str, expected: list[str]) -> None:
    recurrence = build(cron=cron, timezone=tz, start_at=EPOCH)
    assert recurrence.upcoming(z(after), len(expected)) == zs(*expected)


@pytest.mark.parametrize(
    ("tz", "gap_day", "overlap_day"),
    [
        pytest.param(PARIS, date(2025, 3, 30), date(2025, 10, 26), id="paris"),
        pytest.param(NEW_YORK, date(2025, 3, 9), date(2025, 11, 2), id="new-york"),
        pytest.param(SYDNEY, date(2025, 10, 5), date(2025, 4, 6), id="sydney"),
        pytest.param(ADELAIDE, date(2025, 10, 5), date(2025, 4, 6), id="adelaide"),
    ],
)
@pytest.mark.parametrize(
    ("cron", "per_two_days"),
    [
        pytest.param(HOURLY, 50, id="hourly"),
        pytest.param(QUARTER, 200, id="quarter"),
        pytest.param(AT_0230, 3, id="daily-0230"),
        pytest.param("* * * * *", 2900, id="every-minute"),
    ],
)
def test_each_wall_time_fires_once_across_dst(
    tz: ZoneInfo, gap_day: date, overlap_day: date, cron: str, per_two_days: int
) -> None:
    recurrence = build(cron=cron, timezone=tz.key, start_at=EPOCH)
    for day in (gap_day, overlap_day):
        start = datetime.combine(day - timedelta(days=1), datetime.min.time(), tz)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
        occurrences = [when for when in recurrence.upcoming(start, per_two_days) if when < end]
        assert occurrences == sorted(set(occurrences)), "strictly increasing, no duplicates"
        walls = [when.astimezone(tz).replace(tzinfo=None) for when in occurrences]
        assert len(walls) == len(set(walls)), "an ambiguous wall time fired twice"
        assert walls == sorted(walls), "the first pass of a repeated hour is the one used"


def test_gap_time_fires_at_the_end_of_the_gap() -> None:
    recurrence = build(cron="30 2 30 3 *", timezone="Europe/Paris", start_at=EPOCH)
    occurrence = recurrence.next_after(z("2025-03-01T00:00"))
    assert occurrence == z("2025-03-30T01:00")
    assert occurrence.astimezone(PARIS).isoformat() == "2025-03-30T03:00:00+02:00"
    assert recurrence.next_after(occurrence) == z("2026-03-30T00:30")


def test_ambiguous_time_fires_once_at_its_first_occurrence() -> None:
    recurrence = build(cron="30 2 26 10 *", timezone="Europe/Paris", start_at=EPOCH)
    occurrence = recurrence.next_after(z("2025-10-01T00:00"))
    assert occurrence == z("2025-10-26T00:30")  # 02:30 CEST, not 02:30 CET
    assert recurrence.next_after(occurrence) == z("2026-10-26T01:30")


@pytest.mark.parametrize(
    ("cron", "when", "expected"),
    [
        # 01:20 UTC is 02:20 CET, the second pass of the repeated hour
        pytest.param(QUARTER, "2025-10-26T01:20", "2025-10-26T02:00", id="quarter"),
        pytest.param(HOURLY, "2025-10-26T01:20", "2025-10-26T02:00", id="hourly"),
        pytest.param("* * * * * *", "2025-10-26T01:20", "2025-10-26T02:00", id="every-second"),
    ],
)
def test_next_after_a_time_in_the_repeated_hour(cron: str, when: str, expected: str) -> None:
    recurrence = build(cron=cron, timezone="Europe/Paris", start_at=EPOCH)
    assert recurrence.next_after(z(when)) == z(expected)


# --------------------------------------------------------------------------------------------
# Elapsed time: every, Minutes, Hours


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"every": timedelta(hours=1)},
            ["2025-03-30T00:00", "2025-03-30T01:00", "2025-03-30T02:00"],
            id="every-hour",
        ),
        pytest.param(
            {"every": 3600},
            ["2025-03-30T00:00", "2025-03-30T01:00", "2025-03-30T02:00"],
            id="every-int-seconds",
        ),
        pytest.param(
            {"every": 0.5},
            ["2025-03-30T00:00", "2025-03-30T00:00:00.500000", "2025-03-30T00:00:01"],
            id="every-float-seconds",
        ),
        pytest.param(
            {"every": timedelta(days=1)},
            ["2025-03-30T00:00", "2025-03-31T00:00", "2025-04-01T00:00"],
            id="every-day-is-24h",
        ),
        pytest.param(
            {"rate": Minutes(15)},
            ["2025-03-30T00:00", "2025-03-30T00:15", "2025-03-30T00:30"],
            id="minutes",
        ),
        pytest.param(
            {"rate": Hours(1)},
            ["2025-03-30T00:00", "2025-03-30T01:00", "2025-03-30T02:00"],
            id="hours",
        ),
        pytest.param(
            {"rate": Hours(5)},
            ["2025-03-30T00:00", "2025-03-30T05:00", "2025-03-30T10:00"],
            id="hours-5",
        ),
    ],
)
def test_elapsed_time_ignores_dst(kwargs: dict[str, Any], expected: list[str]) -> None:
    # 2025-03-30T00:00Z is 01:00 in Paris, one hour before the clocks go forward.
    recurrence = build(timezone="Europe/Paris", start_at=z("2025-03-30T00:00"), **kwargs)
    assert recurrence.first() == z(expected[0])
    assert recurrence.upcoming(z(expected[0]), len(expected) - 1) == zs(*expected[1:])


def test_elapsed_time_from_a_start_in_a_local_zone_is_exact() -> None:
    # A datetime in a ZoneInfo zone plus a timedelta is wall-clock arithmetic in Python:
    # the recurrence must not inherit that.
    start = datetime(2025, 3, 30, 1, 30, tzinfo=PARIS)  # 00:30 UTC, 30 minutes before the gap
    recurrence = build(rate=Hours(1), timezone="Europe/Paris", start_at=start)
    assert recurrence.start_at == z("2025-03-30T00:30")
    assert recurrence.start_at.tzinfo is UTC
    assert recurrence.upcoming(start, 2) == zs("2025-03-30T01:30", "2025-03-30T02:30")
    direct = Recurrence(None, timedelta(hours=1), None, "UTC", start, None, "once")
    assert direct.next_after(start) == z("2025-03-30T01:30")


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        pytest.param("2025-01-01T08:00", "2025-01-01T09:00", id="before-start"),
        pytest.param("2025-01-01T09:00", "2025-01-01T09:10", id="at-start"),
        pytest.param("2025-01-01T09:00:01", "2025-01-01T09:10", id="just-after-start"),
        pytest.param("2025-01-01T09:09:59.999999", "2025-01-01T09:10", id="just-before-next"),
        pytest.param("2025-01-01T09:10", "2025-01-01T09:20", id="on-occurrence"),
        pytest.param("2025-01-08T09:03", "2025-01-08T09:10", id="a-week-later"),
    ],
)
def test_every_is_anchored_to_start_at_without_drift(when: str, expected: str) -> None:
    recurrence = build(every=timedelta(minutes=10), timezone="UTC", start_at=z("2025-01-01T09:00"))
    assert recurrence.next_after(z(when)) == z(expected)


def test_next_follows_the_scheduled_time_not_the_completion_time() -> None:
    recurrence = build(cron="*/5 * * * *", timezone="UTC", start_at=EPOCH)
    scheduled = z("2025-01-01T09:00")
    finished = scheduled + timedelta(minutes=3, seconds=20)
    assert recurrence.next_after(scheduled) == z("2025-01-01T09:05")
    assert recurrence.next_after(finished) == z("2025-01-01T09:05")
    every = build(every=timedelta(minutes=5), timezone="UTC", start_at=scheduled)
    assert every.next_after(finished) == z("2025-01-01T09:05")


# --------------------------------------------------------------------------------------------
# Wall-clock rates: Days, Daily, Weekdays, WeekdaysAndSaturday


@pytest.mark.parametrize(
    ("rate", "tz", "start", "expected"),
    [
        pytest.param(
            Days(1),
            "Europe/Paris",
            "2025-03-28T08:00",  # 09:00 CET
            ["2025-03-28T08:00", "2025-03-29T08:00", "2025-03-30T07:00", "2025-03-31T07:00"],
            id="days-1-paris-spring",
        ),
        pytest.param(
            Days(1),
            "Europe/Paris",
            "2025-10-25T07:00",  # 09:00 CEST
            ["2025-10-25T07:00", "2025-10-26T08:00", "2025-10-27T08:00"],
            id="days-1-paris-autumn",
        ),
        pytest.param(
            Days(3),
            "America/New_York",
            "2025-03-01T14:00",  # 09:00 EST
            [
                "2025-03-01T14:00",
                "2025-03-04T14:00",
                "2025-03-07T14:00",
                "2025-03-10T13:00",
                "2025-03-13T13:00",
            ],
            id="days-3-new-york",
        ),
        pytest.param(
            Days(1),
            "Europe/Paris",
            "2025-03-28T01:30",  # 02:30 CET
            ["2025-03-28T01:30", "2025-03-29T01:30", "2025-03-30T01:00", "2025-03-31T00:30"],
            id="days-1-at-0230-through-the-gap",
        ),
        pytest.param(
            Days(2),
            "Australia/Sydney",
            "2025-10-02T23:00",  # 09:00 AEST
            ["2025-10-02T23:00", "2025-10-04T22:00", "2025-10-06T22:00"],
            id="days-2-sydney",
        ),
        pytest.param(
            Days(7),
            "UTC",
            "2025-01-01T12:34:56",
            ["2025-01-01T12:34:56", "2025-01-08T12:34:56", "2025-01-15T12:34:56"],
            id="days-7-keeps-seconds",
        ),
        pytest.param(
            Daily(9),
            "Europe/Paris",
            "2025-03-28T12:00",
            ["2025-03-29T08:00", "2025-03-30T07:00", "2025-03-31T07:00"],
            id="daily-paris-spring",
        ),
        pytest.param(
            Daily(2, 30),
            "Europe/Paris",
            "2025-03-28T12:00",
            ["2025-03-29T01:30", "2025-03-30T01:00", "2025-03-31T00:30"],
            id="daily-0230-through-the-gap",
        ),
        pytest.param(
            Daily(2, 30),
            "Europe/Paris",
            "2025-10-25T12:00",
            ["2025-10-26T00:30", "2025-10-27T01:30"],
            id="daily-0230-ambiguous-once",
        ),
        pytest.param(
            Weekdays(17, 0),
            "Europe/Paris",
            "2025-03-28T08:00",  # a Friday
            ["2025-03-28T16:00", "2025-03-31T15:00", "2025-04-01T15:00"],
            id="weekdays",
        ),
        pytest.param(
            WeekdaysAndSaturday(17, 0),
            "Europe/Paris",
            "2025-03-28T08:00",
            ["2025-03-28T16:00", "2025-03-29T16:00", "2025-03-31T15:00"],
            id="weekdays-and-saturday",
        ),
        pytest.param(
            Daily(9, 15),
            "Asia/Kolkata",
            "2025-01-01T00:00",
            ["2025-01-01T03:45", "2025-01-02T03:45"],
            id="daily-kolkata",
        ),
    ],
)
def test_wall_clock_rates(rate: Rate, tz: str, start: str, expected: list[str]) -> None:
    recurrence = build(rate=rate, timezone=tz, start_at=z(start))
    assert recurrence.first() == z(expected[0])
    assert recurrence.upcoming(z(expected[0]), len(expected) - 1) == zs(*expected[1:])


def test_days_keeps_the_local_time_of_start_at() -> None:
    recurrence = build(rate=Days(1), timezone="Europe/Paris", start_at=z("2025-03-01T08:00"))
    local = [when.astimezone(PARIS).time() for when in recurrence.upcoming(EPOCH, 400)]
    assert set(local) == {datetime(2025, 1, 1, 9).time()}


def test_days_started_in_the_repeated_hour_starts_the_next_day() -> None:
    # 01:30 UTC is 02:30 CET, the *second* 02:30 of the night: the schedule's 02:30 is the
    # first one, which is before start_at, so the first occurrence is the next day's.
    recurrence = build(rate=Days(1), timezone="Europe/Paris", start_at=z("2025-10-26T01:30"))
    assert recurrence.first() == z("2025-10-27T01:30")


# --------------------------------------------------------------------------------------------
# first, next_after, upcoming, start_at and end_at


@pytest.mark.parametrize(
    ("kwargs", "start", "expected"),
    [
        pytest.param(
            {"cron": "0 9 * * *"}, "2025-01-01T09:00", "2025-01-01T09:00", id="cron-on-start"
        ),
        pytest.param(
            {"cron": "0 9 * * *"}, "2025-01-01T09:00:01", "2025-01-02T09:00", id="cron-after-start"
        ),
        pytest.param(
            {"cron": "0 9 * * *"},
            "2025-01-01T08:59:59.999999",
            "2025-01-01T09:00",
            id="cron-just-before",
        ),
        pytest.param(
            {"cron": "*/10 * * * * *"},
            "2025-01-01T09:00:01",
            "2025-01-01T09:00:10",
            id="cron-seconds",
        ),
        pytest.param(
            {"every": 30},
            "2025-01-01T09:00:00.500000",
            "2025-01-01T09:00:00.500000",
            id="every-is-start",
        ),
        pytest.param(
            {"rate": Minutes(5)},
            "2025-01-01T09:01:02",
            "2025-01-01T09:01:02",
            id="minutes-is-start",
        ),
        pytest.param(
            {"rate": Hours(2)}, "2025-01-01T09:01:02", "2025-01-01T09:01:02", id="hours-is-start"
        ),
        pytest.param(
            {"rate": Days(2)}, "2025-01-01T09:01:02", "2025-01-01T09:01:02", id="days-is-start"
        ),
        pytest.param(
            {"rate": Weekdays(9)},
            "2025-01-04T08:00",
            "2025-01-06T09:00",
            id="weekdays-from-saturday",
        ),
        pytest.param(
            {"rate": WeekdaysAndSaturday(9)},
            "2025-01-04T08:00",
            "2025-01-04T09:00",
            id="weekdays-and-saturday-from-saturday",
        ),
        pytest.param(
            {"rate": Daily(9)}, "2025-01-01T09:00", "2025-01-01T09:00", id="daily-on-start"
        ),
    ],
)
def test_first(kwargs: dict[str, Any], start: str, expected: str) -> None:
    recurrence = build(timezone="UTC", start_at=z(start), **kwargs)
    assert recurrence.first() == z(expected)
    assert recurrence.next_after(z(start) - timedelta(days=30)) == z(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cron": "0 9 * * *"}, id="cron"),
        pytest.param({"every": timedelta(hours=1)}, id="every"),
        pytest.param({"rate": Hours(1)}, id="hours"),
        pytest.param({"rate": Days(1)}, id="days"),
        pytest.param({"rate": Daily(9)}, id="daily"),
    ],
)
def test_end_at_stops_the_schedule(kwargs: dict[str, Any]) -> None:
    start = z("2025-01-01T09:00")
    recurrence = build(timezone="UTC", start_at=start, end_at=z("2025-01-03T09:00"), **kwargs)
    occurrences = recurrence.upcoming(start - timedelta(seconds=1), 1000)
    assert occurrences[0] == start
    assert occurrences[-1] == z("2025-01-03T09:00"), "end_at itself is included"
    assert recurrence.next_after(z("2025-01-03T09:00")) is None
    assert recurrence.next_after(z("2030-01-01T00:00")) is None


def test_first_is_none_when_the_schedule_ends_before_it_starts() -> None:
    recurrence = build(
        cron="0 9 * * *",
        timezone="UTC",
        start_at=z("2025-01-01T10:00"),
        end_at=z("2025-01-02T08:00"),
    )
    assert recurrence.first() is None
    assert recurrence.upcoming(EPOCH, 5) == []


@pytest.mark.parametrize("count", [0, -1])
def test_upcoming_with_nothing_asked(count: int) -> None:
    assert build(every=1, timezone="UTC").upcoming(EPOCH, count) == []


def test_upcoming_returns_utc() -> None:
    recurrence = build(cron="0 9 * * *", timezone="Europe/Paris", start_at=EPOCH)
    after = datetime(2025, 6, 1, tzinfo=SYDNEY)  # any zone in, UTC out
    occurrences = recurrence.upcoming(after, 3)
    assert occurrences == zs("2025-06-01T07:00", "2025-06-02T07:00", "2025-06-03T07:00")
    assert all(when.tzinfo is UTC for when in occurrences)


@pytest.mark.parametrize("method", ["next_after", "upcoming", "catch_up"])
def test_naive_datetimes_are_refused(method: str) -> None:
    recurrence = build(every=1, timezone="UTC")
    naive = datetime(2025, 1, 1)
    calls = {
        "next_after": lambda: recurrence.next_after(naive),
        "upcoming": lambda: recurrence.upcoming(naive, 1),
        "catch_up": lambda: recurrence.catch_up(naive, naive),
    }
    with pytest.raises(InvalidAlarm):
        calls[method]()


# --------------------------------------------------------------------------------------------
# Misfire policies


CATCH_UP_CASES = [
    # hourly cron; 08:00 is handled at 11:30: 08:00, 09:00, 10:00 and 11:00 are overdue
    pytest.param(
        {"cron": "0 * * * *"}, "once", "08:00", "11:30", ("11:00", "12:00", 3), id="cron-once"
    ),
    pytest.param(
        {"cron": "0 * * * *"}, "skip", "08:00", "11:30", (None, "12:00", 4), id="cron-skip"
    ),
    pytest.param(
        {"cron": "0 * * * *"}, "all", "08:00", "11:30", ("08:00", "09:00", 0), id="cron-all"
    ),
    # a single overdue occurrence is ordinary lateness, whatever the policy
    pytest.param(
        {"cron": "0 * * * *"},
        "once",
        "08:00",
        "08:59:59",
        ("08:00", "09:00", 0),
        id="cron-late-once",
    ),
    pytest.param(
        {"cron": "0 * * * *"},
        "skip",
        "08:00",
        "08:59:59",
        ("08:00", "09:00", 0),
        id="cron-late-skip",
    ),
    pytest.param(
        {"cron": "0 * * * *"}, "all", "08:00", "08:59:59", ("08:00", "09:00", 0), id="cron-late-all"
    ),
    pytest.param(
        {"cron": "0 * * * *"}, "once", "08:00", "08:00", ("08:00", "09:00", 0), id="cron-on-time"
    ),
    # the next occurrence due exactly now makes two overdue
    pytest.param(
        {"cron": "0 * * * *"},
        "once",
        "08:00",
        "09:00",
        ("09:00", "10:00", 1),
        id="cron-boundary-once",
    ),
    pytest.param(
        {"cron": "0 * * * *"}, "skip", "08:00", "09:00", (None, "10:00", 2), id="cron-boundary-skip"
    ),
    # every 10 minutes from 00:00; 00:00 handled at 01:05: 00:00 ... 01:00 (7) are overdue
    pytest.param({"every": 600}, "once", "00:00", "01:05", ("01:00", "01:10", 6), id="every-once"),
    pytest.param({"every": 600}, "skip", "00:00", "01:05", (None, "01:10", 7), id="every-skip"),
    pytest.param({"every": 600}, "all", "00:00", "01:05", ("00:00", "00:10", 0), id="every-all"),
    pytest.param({"every": 600}, "once", "00:00", "00:09", ("00:00", "00:10", 0), id="every-late"),
    # rates
    pytest.param(
        {"rate": Minutes(30)}, "once", "00:00", "02:10", ("02:00", "02:30", 4), id="minutes-once"
    ),
    pytest.param(
        {"rate": Daily(6)},
        "skip",
        "06:00",
        "23:00",
        ("06:00", "2025-01-02T06:00", 0),
        id="daily-late",
    ),
]


def _at(text: str | None) -> datetime | None:
    if text is None:
        return None
    return z(text if "T" in text else f"2025-01-01T{text}")


@pytest.mark.parametrize(("kwargs", "misfire", "occurrence", "now", "expected"), CATCH_UP_CASES)
def test_catch_up(
    kwargs: dict[str, Any],
    misfire: str,
    occurrence: str,
    now: str,
    expected: tuple[str | None, str | None, int],
) -> None:
    recurrence = build(timezone="UTC", start_at=z("2025-01-01T00:00"), misfire=misfire, **kwargs)
    deliver, resume, missed = expected
    assert recurrence.catch_up(_at(occurrence), _at(now)) == CatchUp(  # type: ignore[arg-type]
        deliver=_at(deliver), resume=_at(resume), missed=missed
    )


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        pytest.param("once", ("10:00", None, 2), id="once"),
        pytest.param("skip", (None, None, 3), id="skip"),
        pytest.param("all", ("08:00", "09:00", 0), id="all"),
    ],
)
def test_catch_up_respects_end_at(misfire: str, expected: tuple[str | None, ...]) -> None:
    recurrence = build(
        cron="0 * * * *",
        timezone="UTC",
        start_at=z("2025-01-01T00:00"),
        end_at=z("2025-01-01T10:30"),
        misfire=misfire,
    )
    deliver, resume, missed = expected
    result = recurrence.catch_up(z("2025-01-01T08:00"), z("2025-01-01T12:00"))
    assert result == CatchUp(deliver=_at(deliver), resume=_at(resume), missed=missed)  # type: ignore[arg-type]
    last = recurrence.catch_up(z("2025-01-01T10:00"), z("2025-01-01T12:00"))
    assert last == CatchUp(deliver=z("2025-01-01T10:00"), resume=None, missed=0)


def test_catch_up_across_a_dst_gap_counts_each_instant_once() -> None:
    # Paris, every 15 minutes: the 02:00-02:45 wall times all happen at 03:00 CEST (01:00 UTC)
    recurrence = build(cron=QUARTER, timezone="Europe/Paris", start_at=EPOCH, misfire="skip")
    result = recurrence.catch_up(z("2025-03-29T23:00"), z("2025-03-30T02:00"))
    # 23:00 ... 00:45 (8), 01:00 (the gap), 01:15, 01:30, 01:45, 02:00
    assert result == CatchUp(deliver=None, resume=z("2025-03-30T02:15"), missed=13)


def test_catch_up_across_a_dst_overlap_counts_the_repeated_hour_once() -> None:
    recurrence = build(cron=HOURLY, timezone="Europe/Paris", start_at=EPOCH, misfire="once")
    result = recurrence.catch_up(z("2025-10-25T22:00"), z("2025-10-26T03:30"))
    # 22:00, 23:00, 00:00 (02:00 CEST), 02:00 (03:00 CET), 03:00
    assert result == CatchUp(deliver=z("2025-10-26T03:00"), resume=z("2025-10-26T04:00"), missed=4)


@pytest.mark.parametrize("kind", ["every", "cron"])
@pytest.mark.parametrize(
    ("misfire", "deliver_offset", "resume_offset", "missed"),
    [
        pytest.param("once", 0, 1, 7 * 86400, id="once"),
        pytest.param("skip", None, 1, 7 * 86400 + 1, id="skip"),
        pytest.param(
            "all", -(MAX_CATCH_UP - 1), -(MAX_CATCH_UP - 2), 7 * 86400 + 1 - MAX_CATCH_UP, id="all"
        ),
    ],
)
def test_a_week_of_downtime_every_second_is_quick(
    kind: str, misfire: str, deliver_offset: int | None, resume_offset: int, missed: int
) -> None:
    start = z("2025-03-26T00:00")  # the week contains the Paris spring-forward gap
    schedule: dict[str, Any] = {"every": 1} if kind == "every" else {"cron": "* * * * * *"}
    recurrence = build(timezone="Europe/Paris", start_at=start, misfire=misfire, **schedule)
    now = start + timedelta(days=7)
    began = time.perf_counter()
    result = recurrence.catch_up(start, now)
    assert time.perf_counter() - began < 2.0
    second = timedelta(seconds=1)
    deliver = None if deliver_offset is None else now + deliver_offset * second
    assert result == CatchUp(deliver=deliver, resume=now + resume_offset * second, missed=missed)


def test_ten_years_of_downtime_every_second_cron_is_quick() -> None:
    recurrence = build(cron="* * * * * *", timezone="UTC", start_at=EPOCH, misfire="once")
    now = EPOCH + timedelta(days=3653)
    began = time.perf_counter()
    result = recurrence.catch_up(EPOCH, now)
    assert time.perf_counter() - began < 5.0
    assert result == CatchUp(deliver=now, resume=now + timedelta(seconds=1), missed=3653 * 86400)


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param({"cron": "0 * * * *"}, id="cron"),
        pytest.param({"every": timedelta(hours=1)}, id="every"),
        pytest.param({"rate": Days(1)}, id="days"),
    ],
)
def test_all_delivers_at_most_max_catch_up_in_order(schedule: dict[str, Any]) -> None:
    start = z("2025-01-01T00:00")
    recurrence = build(timezone="UTC", start_at=start, misfire="all", **schedule)
    step = timedelta(days=1) if "rate" in schedule else timedelta(hours=1)
    now = start + 250 * step + timedelta(minutes=30)  # 251 occurrences overdue
    delivered: list[datetime] = []
    missed = 0
    occurrence: datetime | None = start
    while occurrence is not None and occurrence <= now:
        decision = recurrence.catch_up(occurrence, now)
        assert decision.deliver is not None
        delivered.append(decision.deliver)
        missed += decision.missed
        occurrence = decision.resume
    assert len(delivered) == MAX_CATCH_UP
    assert delivered == [start + (151 + i) * step for i in range(MAX_CATCH_UP)]
    assert missed == 251 - MAX_CATCH_UP
    assert occurrence == start + 251 * step


def test_all_within_the_bound_delivers_every_overdue_occurrence() -> None:
    recurrence = build(every=60, timezone="UTC", start_at=EPOCH, misfire="all")
    now = EPOCH + timedelta(minutes=MAX_CATCH_UP - 1)  # exactly MAX_CATCH_UP overdue
    assert recurrence.catch_up(EPOCH, now) == CatchUp(
        deliver=EPOCH, resume=EPOCH + timedelta(minutes=1), missed=0
    )
    later = now + timedelta(minutes=1)  # one more: the oldest is dropped
    assert recurrence.catch_up(EPOCH, later) == CatchUp(
        deliver=EPOCH + timedelta(minutes=1), resume=EPOCH + timedelta(minutes=2), missed=1
    )


# --------------------------------------------------------------------------------------------
# describe


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"cron": "0 17 * * 1-5", "timezone": "Europe/Paris"},
            "At 17:00, Monday through Friday (Europe/Paris)",
            id="cron-weekdays",
        ),
        pytest.param({"cron": "*/15 * * * *"}, "Every 15 minutes (UTC)", id="cron-quarter"),
        pytest.param({"cron": "*/10 * * * * *"}, "Every 10 seconds (UTC)", id="cron-seconds"),
        pytest.param(
            {"cron": "30 0 9 * * 1-5"},
            "At 09:00:30, Monday through Friday (UTC)",
            id="cron-seconds-first",
        ),
        pytest.param({"cron": "0 21 * * *"}, "At 21:00 (UTC)", id="cron-24-hour-clock"),
        pytest.param({"cron": "@hourly"}, "Every hour (UTC)", id="macro-hourly"),
        pytest.param({"cron": "@daily"}, "At 00:00 (UTC)", id="macro-daily"),
        pytest.param({"cron": "@weekly"}, "At 00:00, only on Sunday (UTC)", id="macro-weekly"),
        pytest.param(
            {"cron": "@monthly"}, "At 00:00, on day 1 of the month (UTC)", id="macro-monthly"
        ),
        pytest.param({"every": 30}, "Every 30 seconds", id="every-30s"),
        pytest.param({"every": 1}, "Every second", id="every-1s"),
        pytest.param({"every": 1.5}, "Every 1.5 seconds", id="every-fraction"),
        pytest.param({"every": timedelta(minutes=90)}, "Every 90 minutes", id="every-90min"),
        pytest.param({"every": timedelta(hours=2)}, "Every 2 hours", id="every-2h"),
        pytest.param({"every": timedelta(days=2)}, "Every 2 days", id="every-2d"),
        pytest.param({"rate": Minutes(15)}, "Every 15 minutes", id="minutes"),
        pytest.param({"rate": Minutes(1)}, "Every minute", id="minutes-1"),
        pytest.param({"rate": Hours(2)}, "Every 2 hours", id="hours"),
        pytest.param({"rate": Hours(1)}, "Every hour", id="hours-1"),
        pytest.param(
            {"rate": Days(3), "timezone": "Europe/Paris"},
            "Every 3 days at 09:00 (Europe/Paris)",
            id="days",
        ),
        pytest.param(
            {"rate": Days(1), "timezone": "Europe/Paris"},
            "Every day at 09:00 (Europe/Paris)",
            id="days-1",
        ),
        pytest.param(
            {"rate": Daily(9), "timezone": "Europe/Paris"},
            "Every day at 09:00 (Europe/Paris)",
            id="daily",
        ),
        pytest.param(
            {"rate": Weekdays(17, 0), "timezone": "Europe/Paris"},
            "At 17:00, Monday through Friday (Europe/Paris)",
            id="weekdays",
        ),
        pytest.param(
            {"rate": WeekdaysAndSaturday(17, 30), "timezone": "Europe/Paris"},
            "At 17:30, Monday through Saturday (Europe/Paris)",
            id="weekdays-and-saturday",
        ),
    ],
)
def test_describe(kwargs: dict[str, Any], expected: str) -> None:
    kwargs.setdefault("timezone", "UTC")
    recurrence = build(start_at=z("2025-01-01T08:00"), **kwargs)  # 09:00 in Paris
    assert recurrence.describe() == expected


def test_describe_without_cron_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "cron_descriptor", None)
    recurrence = build(cron="0 9 * * 1-5", timezone="Europe/Paris")
    assert recurrence.describe() == "cron '0 9 * * 1-5' (Europe/Paris)"


# --------------------------------------------------------------------------------------------
# JSON


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris"}, id="cron"),
        pytest.param({"cron": "30 0 9 * * 1-5"}, id="cron-seconds"),
        pytest.param({"cron": "@weekly", "misfire": "skip"}, id="macro"),
        pytest.param({"every": 30}, id="every-int"),
        pytest.param(
            {"every": timedelta(milliseconds=1500), "misfire": "all"}, id="every-fraction"
        ),
        pytest.param({"every": timedelta(microseconds=1)}, id="every-microsecond"),
        pytest.param(
            {"every": timedelta(days=400, seconds=7, microseconds=123457)}, id="every-long"
        ),
        pytest.param({"rate": Minutes(5)}, id="minutes"),
        pytest.param({"rate": Hours(3)}, id="hours"),
        pytest.param({"rate": Days(2), "timezone": "Australia/Adelaide"}, id="days"),
        pytest.param({"rate": Daily(9, 30)}, id="daily"),
        pytest.param({"rate": Weekdays(17)}, id="weekdays"),
        pytest.param({"rate": WeekdaysAndSaturday(8, 15)}, id="weekdays-and-saturday"),
        pytest.param(
            {"cron": "0 9 * * *", "end_at": datetime(2026, 1, 1, tzinfo=PARIS)}, id="end-at"
        ),
    ],
)
def test_json_round_trip(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("timezone", "UTC")
    recurrence = build(start_at=datetime(2025, 1, 1, 9, 30, 15, 250, tzinfo=NEW_YORK), **kwargs)
    data = json.loads(json.dumps(recurrence.to_json()))
    assert data == recurrence.to_json()
    restored = Recurrence.from_json(data)
    assert restored == recurrence
    assert restored.upcoming(EPOCH, 3) == recurrence.upcoming(EPOCH, 3)
    # The worker's path rebuilds it without validating it again: the very same schedule.
    assert Recurrence.from_stored(data) == recurrence


def test_json_shape() -> None:
    recurrence = build(
        rate=Weekdays(17, 0),
        timezone="Europe/Paris",
        start_at=z("2025-01-01T08:00"),
        misfire="skip",
    )
    assert recurrence.to_json() == {
        "version": 1,
        "cron": None,
        "every": None,
        "rate": {"type": "Weekdays", "hour": 17, "minute": 0},
        "timezone": "Europe/Paris",
        "start_at": "2025-01-01T08:00:00+00:00",
        "end_at": None,
        "misfire": "skip",
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param({}, "recurrence", id="empty"),
        pytest.param({"version": 2, "timezone": "UTC"}, "recurrence", id="unknown-version"),
        pytest.param(
            {
                "cron": None,
                "every": None,
                "rate": {"type": "Fortnightly"},
                "timezone": "UTC",
                "start_at": "2025-01-01T00:00:00+00:00",
                "end_at": None,
                "misfire": "once",
            },
            "rate",
            id="unknown-rate",
        ),
        pytest.param(
            {
                "cron": None,
                "every": None,
                "rate": {"type": "Daily", "hour": 30},
                "timezone": "UTC",
                "start_at": "2025-01-01T00:00:00+00:00",
                "end_at": None,
                "misfire": "once",
            },
            "rate",
            id="bad-rate",
        ),
        pytest.param(
            {"cron": "0 9 * * *", "timezone": "UTC", "start_at": "yesterday", "misfire": "once"},
            "recurrence",
            id="bad-date",
        ),
        pytest.param(
            {
                "cron": "0 99 * * *",
                "timezone": "UTC",
                "start_at": "2025-01-01T00:00:00+00:00",
                "misfire": "once",
            },
            "cron",
            id="bad-cron",
        ),
    ],
)
def test_from_json_rejects_bad_data(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidAlarm) as caught:
        Recurrence.from_json(data)
    assert caught.value.field == field


def test_from_stored_reads_what_this_version_cannot_read_as_an_error_too() -> None:
    for data in (
        {"version": 99, "cron": "0 9 * * *"},
        {"rate": {"type": "Fortnightly"}, "timezone": "UTC"},
        {"cron": "0 9 * * *", "timezone": "UTC", "start_at": "yesterday", "misfire": "once"},
    ):
        with pytest.raises(InvalidAlarm):
            Recurrence.from_stored(data)


# --------------------------------------------------------------------------------------------
# Validation


NAIVE = datetime(2025, 1, 1, 9, 0)
START = z("2025-01-01T09:00")


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        pytest.param({}, "cron/every/rate", "None", id="no-schedule"),
        pytest.param(
            {"cron": "* * * * *", "every": 5}, "cron/every/rate", "'* * * * *'", id="cron-and-every"
        ),
        pytest.param(
            {"every": 5, "rate": Daily(9)},
            "cron/every/rate",
            "Daily(hour=9, minute=0)",
            id="every-and-rate",
        ),
        pytest.param(
            {"cron": "@daily", "every": 1, "rate": Hours(1)},
            "cron/every/rate",
            "Hours(n=1)",
            id="all-three",
        ),
        pytest.param({"cron": "61 * * * *"}, "cron", "'61 * * * *'", id="cron-minute-out-of-range"),
        pytest.param({"cron": "0 24 * * *"}, "cron", "'0 24 * * *'", id="cron-hour-out-of-range"),
        pytest.param(
            {"cron": "0 0 * * 8"}, "cron", "'0 0 * * 8'", id="cron-day-of-week-out-of-range"
        ),
        pytest.param({"cron": "0 0 1 13 *"}, "cron", "'0 0 1 13 *'", id="cron-month-out-of-range"),
        pytest.param({"cron": "* * * *"}, "cron", "'* * * *'", id="cron-4-fields"),
        pytest.param(
            {"cron": "0 0 9 * * * 2030"}, "cron", "'0 0 9 * * * 2030'", id="cron-7-fields"
        ),
        pytest.param({"cron": "* * * * * * *"}, "cron", "'* * * * * * *'", id="cron-7-stars"),
        pytest.param({"cron": "@reboot"}, "cron", "'@reboot'", id="cron-reboot"),
        pytest.param({"cron": "@every_5m"}, "cron", "'@every_5m'", id="cron-unknown-macro"),
        pytest.param({"cron": "R * * * *"}, "cron", "'R * * * *'", id="cron-random"),
        pytest.param({"cron": "H * * * *"}, "cron", "'H * * * *'", id="cron-hashed"),
        pytest.param({"cron": "0 0 30 2 *"}, "cron", "'0 0 30 2 *'", id="cron-february-30"),
        pytest.param({"cron": "0 9 * * FUN"}, "cron", "'0 9 * * FUN'", id="cron-bad-day-name"),
        pytest.param({"cron": "every day"}, "cron", "'every day'", id="cron-words"),
        pytest.param({"cron": ""}, "cron", "''", id="cron-empty"),
        pytest.param({"cron": 5}, "cron", "5", id="cron-not-a-string"),
        pytest.param({"every": 0}, "every", "0", id="every-zero"),
        pytest.param({"every": -5}, "every", "-5", id="every-negative"),
        pytest.param({"every": timedelta(0)}, "every", "timedelta(0)", id="every-zero-timedelta"),
        pytest.param(
            {"every": timedelta(seconds=-1)},
            "every",
            "timedelta(days=-1",
            id="every-negative-timedelta",
        ),
        pytest.param({"every": 1e-9}, "every", "1e-09", id="every-below-a-microsecond"),
        pytest.param({"every": "30"}, "every", "'30'", id="every-string"),
        pytest.param({"every": True}, "every", "True", id="every-bool"),
        pytest.param({"every": float("nan")}, "every", "nan", id="every-nan"),
        pytest.param({"every": float("inf")}, "every", "inf", id="every-inf"),
        pytest.param({"every": 1e20}, "every", "1e+20", id="every-too-large"),
        pytest.param({"rate": "Weekdays"}, "rate", "'Weekdays'", id="rate-string"),
        pytest.param({"rate": Weekdays}, "rate", "Weekdays", id="rate-class"),
        pytest.param({"rate": Rate()}, "rate", "Rate object", id="rate-base-class"),
        pytest.param({"rate": 5}, "rate", "5", id="rate-number"),
        pytest.param(
            {"every": 5, "timezone": "Mars/Olympus_Mons"},
            "timezone",
            "'Mars/Olympus_Mons'",
            id="timezone-unknown",
        ),
        pytest.param({"every": 5, "timezone": ""}, "timezone", "''", id="timezone-empty"),
        pytest.param(
            {"every": 5, "timezone": "../etc/passwd"},
            "timezone",
            "'../etc/passwd'",
            id="timezone-path",
        ),
        pytest.param(
            {"every": 5, "timezone": timezone(timedelta(hours=2))},
            "timezone",
            "timedelta(seconds=7200)",
            id="timezone-fixed-offset",
        ),
        pytest.param({"every": 5, "timezone": 5}, "timezone", "5", id="timezone-number"),
        pytest.param({"every": 5, "start_at": NAIVE}, "start_at", repr(NAIVE), id="start-naive"),
        pytest.param(
            {"every": 5, "start_at": date(2025, 1, 1)},
            "start_at",
            "date(2025, 1, 1)",
            id="start-date",
        ),
        pytest.param(
            {"every": 5, "start_at": "2025-01-01"}, "start_at", "'2025-01-01'", id="start-string"
        ),
        pytest.param(
            {"every": 5, "start_at": START, "end_at": NAIVE}, "end_at", repr(NAIVE), id="end-naive"
        ),
        pytest.param(
            {"every": 5, "start_at": START, "end_at": START},
            "end_at",
            "2025, 1, 1, 9, 0",
            id="end-equal-start",
        ),
        pytest.param(
            {"every": 5, "start_at": START, "end_at": START - timedelta(hours=1)},
            "end_at",
            "2025, 1, 1, 8, 0",
            id="end-before-start",
        ),
        pytest.param(
            {"every": 5, "misfire": "sometimes"}, "misfire", "'sometimes'", id="misfire-unknown"
        ),
        pytest.param({"every": 5, "misfire": "ONCE"}, "misfire", "'ONCE'", id="misfire-upper-case"),
        pytest.param({"every": 5, "misfire": None}, "misfire", "None", id="misfire-none"),
        pytest.param({"every": 5, "now": NAIVE}, "now", repr(NAIVE), id="now-naive"),
    ],
)
def test_build_rejects_bad_input(kwargs: dict[str, Any], field: str, shown: str) -> None:
    with pytest.raises(InvalidAlarm) as caught:
        build(**kwargs)
    assert caught.value.field == field
    message = str(caught.value)
    assert message.startswith(f"{field}=")
    assert shown in message


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda: Minutes(0), "rate=Minutes(n=0): n must be a positive integer", id="minutes-0"
        ),
        pytest.param(
            lambda: Minutes(-1),
            "rate=Minutes(n=-1): n must be a positive integer",
            id="minutes-neg",
        ),
        pytest.param(
            lambda: Minutes(True), "rate=Minutes(n=True): n must be an integer", id="minutes-bool"
        ),
        pytest.param(
            lambda: Minutes(1.5),  # type: ignore[arg-type]
            "rate=Minutes(n=1.5): n must be an integer",
            id="minutes-float",
        ),
        pytest.param(
            lambda: Hours(0), "rate=Hours(n=0): n must be a positive integer", id="hours-0"
        ),
        pytest.param(lambda: Days(0), "rate=Days(n=0): n must be a positive integer", id="days-0"),
        pytest.param(
            lambda: Days("2"),  # type: ignore[arg-type]
            "rate=Days(n='2'): n must be an integer",
            id="days-string",
        ),
        pytest.param(
            lambda: Daily(24),
            "rate=Daily(hour=24, minute=0): hour must be between 0 and 23",
            id="daily-24",
        ),
        pytest.param(
            lambda: Daily(-1),
            "rate=Daily(hour=-1, minute=0): hour must be between 0 and 23",
            id="daily-negative",
        ),
        pytest.param(
            lambda: Daily(9, 60),
            "rate=Daily(hour=9, minute=60): minute must be between 0 and 59",
            id="daily-minute-60",
        ),
        pytest.param(
            lambda: Weekdays(25, 0),
            "rate=Weekdays(hour=25, minute=0): hour must be between 0 and 23",
            id="weekdays-25",
        ),
        pytest.param(
            lambda: WeekdaysAndSaturday("9"),  # type: ignore[arg-type]
            "rate=WeekdaysAndSaturday(hour='9', minute=0): hour must be an integer",
            id="weekdays-and-saturday-string",
        ),
        pytest.param(
            lambda: Weekdays(9, False),
            "rate=Weekdays(hour=9, minute=False): minute must be an integer",
            id="weekdays-bool",
        ),
    ],
)
def test_rates_validate(make: Any, message: str) -> None:
    with pytest.raises(InvalidAlarm) as caught:
        make()
    assert caught.value.field == "rate"
    assert str(caught.value) == message


def test_rates_are_frozen_comparable_and_readable() -> None:
    assert Weekdays(17, 0) == Weekdays(17)
    assert Daily(17) != Weekdays(17)
    assert repr(WeekdaysAndSaturday(8, 5)) == "WeekdaysAndSaturday(hour=8, minute=5)"
    assert repr(Minutes(5)) == "Minutes(n=5)"
    assert {Hours(1), Hours(1)} == {Hours(1)}
    with pytest.raises(AttributeError):
        Hours(1).n = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("tz", "key"),
    [
        pytest.param("Europe/Paris", "Europe/Paris", id="key"),
        pytest.param(PARIS, "Europe/Paris", id="zoneinfo"),
        pytest.param(UTC, "UTC", id="datetime-utc"),
        pytest.param(ZoneInfo("UTC"), "UTC", id="zoneinfo-utc"),
        pytest.param("Asia/Kolkata", "Asia/Kolkata", id="kolkata"),
    ],
)
def test_timezone_forms(tz: Any, key: str) -> None:
    assert build(every=5, timezone=tz).timezone == key


def test_timezone_defaults_to_settings_time_zone(settings: Any) -> None:
    settings.TIME_ZONE = "America/New_York"
    assert build(every=5).timezone == "America/New_York"
    settings.TIME_ZONE = "Asia/Kolkata"
    assert build(every=5).timezone == "Asia/Kolkata"


def test_start_at_defaults_to_now() -> None:
    now = datetime(2025, 6, 1, 12, 0, 0, 123, tzinfo=PARIS)
    recurrence = build(every=5, timezone="UTC", now=now)
    assert recurrence.start_at == now
    assert recurrence.start_at.tzinfo is UTC
    before = datetime.now(UTC)
    assert before <= build(every=5, timezone="UTC").start_at <= datetime.now(UTC)


@pytest.mark.parametrize("misfire", MISFIRE_POLICIES)
def test_each_misfire_policy_is_accepted(misfire: str) -> None:
    assert build(every=5, timezone="UTC", misfire=misfire).misfire == misfire


@pytest.mark.parametrize(
    ("cron", "stored"),
    [
        pytest.param("  0 9 * * MON-FRI ", "0 9 * * MON-FRI", id="stripped"),
        pytest.param("*/10 * * * * *", "*/10 * * * * *", id="seconds-first"),
        pytest.param("@annually", "@annually", id="macro"),
    ],
)
def test_valid_cron_is_stored(cron: str, stored: str) -> None:
    assert build(cron=cron, timezone="UTC").cron == stored


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/New_York", "Australia/Adelaide"])
@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param({"cron": "*/15 * * * *"}, id="quarter"),
        pytest.param({"cron": "0,30 2 * * *"}, id="0200-and-0230"),
        pytest.param({"cron": "20 */7 * * 1-5"}, id="odd-hours-weekdays"),
        pytest.param({"cron": "0 */20 2,3 * * *"}, id="seconds-first"),
        pytest.param({"cron": "0 0 L * *"}, id="last-day"),
        pytest.param({"rate": Days(2)}, id="days-2"),
        pytest.param({"rate": Weekdays(2, 30)}, id="weekdays-0230"),
        pytest.param({"every": timedelta(minutes=7)}, id="every-7min"),
    ],
)
@pytest.mark.parametrize(
    ("begin", "end"),
    [
        pytest.param("2025-03-29T20:00", "2025-03-31T03:00", id="spring"),
        pytest.param("2025-10-25T20:00", "2025-11-03T09:00", id="autumn"),
        pytest.param("2025-02-20T00:00", "2025-05-02T00:00", id="months"),
    ],
)
def test_catch_up_matches_counting_one_by_one(
    tz: str, schedule: dict[str, Any], begin: str, end: str
) -> None:
    # The catch-up arithmetic (counting by days, collapsing DST gaps) must agree with simply
    # walking the occurrences.
    start = z("2025-02-01T00:00:00") + timedelta(seconds=17)
    now = z(end)
    recurrence = build(timezone=tz, start_at=start, **schedule)
    occurrence = recurrence.next_after(z(begin))
    assert occurrence is not None
    walked = [occurrence]
    while chunk := recurrence.upcoming(walked[-1], 200):
        walked += [when for when in chunk if when <= now]
        if chunk[-1] > now:
            break
    resume = recurrence.next_after(now)
    skip = build(timezone=tz, start_at=start, misfire="skip", **schedule)
    once = build(timezone=tz, start_at=start, misfire="once", **schedule)
    every = build(timezone=tz, start_at=start, misfire="all", **schedule)
    if len(walked) == 1:  # ordinary lateness
        following = recurrence.next_after(occurrence)
        for policy in (skip, once, every):
            assert policy.catch_up(occurrence, now) == CatchUp(occurrence, following, 0)
        return
    assert skip.catch_up(occurrence, now) == CatchUp(None, resume, len(walked))
    assert once.catch_up(occurrence, now) == CatchUp(walked[-1], resume, len(walked) - 1)
    if len(walked) > MAX_CATCH_UP:
        kept = walked[-MAX_CATCH_UP]
        expected = CatchUp(kept, walked[-MAX_CATCH_UP + 1], len(walked) - MAX_CATCH_UP)
    else:
        expected = CatchUp(occurrence, walked[1], 0)
    assert every.catch_up(occurrence, now) == expected


def test_remembered_next_occurrences_follow_each_schedules_own_fields_zone_and_start():
    """Next occurrences of wall-clock schedules are remembered by (fields, zone, instant);
    schedules that differ in any of them, or that have not started yet, get their own."""
    from django_alarms.recurrence import Daily

    at = datetime(2031, 3, 3, 7, 30, tzinfo=UTC)
    nine = build(cron="0 9 * * *", timezone="UTC", start_at=at - timedelta(days=9))
    paris = build(cron="0 9 * * *", timezone="Europe/Paris", start_at=at - timedelta(days=9))
    ten = build(cron="0 10 * * *", timezone="UTC", start_at=at - timedelta(days=9))
    daily = build(rate=Daily(9, 30), timezone="UTC", start_at=at - timedelta(days=9))
    later = build(cron="0 9 * * *", timezone="UTC", start_at=at + timedelta(days=2))
    for _ in range(2):  # the second round is answered from what the first remembered
        assert nine.next_after(at) == datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
        assert paris.next_after(at) == datetime(2031, 3, 3, 8, 0, tzinfo=UTC)
        assert ten.next_after(at) == datetime(2031, 3, 3, 10, 0, tzinfo=UTC)
        assert daily.next_after(at) == datetime(2031, 3, 3, 9, 30, tzinfo=UTC)
        assert later.next_after(at) == datetime(2031, 3, 5, 9, 0, tzinfo=UTC)
        ending = build(
            cron="0 9 * * *", timezone="UTC", start_at=at, end_at=at + timedelta(hours=1)
        )
        assert ending.next_after(at) is None
