"""Recurring schedules: cron expressions, fixed intervals and rates, in a time zone.

This module is pure: no ORM, no models, nothing read from the settings at import time. A
:class:`Recurrence` answers questions about instants ("what comes after this one?", "how many
were missed while the workers were down?"); it never stores state of its own.

Two families of schedule exist, and daylight saving time treats them differently:

* **Elapsed time** (``every=``, :class:`Minutes`, :class:`Hours`): the occurrences are
  ``start_at + k * interval``. A DST change does not move them: "every hour" is always 3600
  seconds apart.
* **Wall-clock time** (``cron=``, :class:`Days`, :class:`Daily`, :class:`Weekdays`,
  :class:`WeekdaysAndSaturday`): the occurrences are local times in ``timezone``. A local time
  that does not exist (spring forward) fires once, at the first instant after the gap; a local
  time that exists twice (fall back) fires once, at its first occurrence. Occurrences are
  strictly increasing: wall times that land on the same instant fire once.

Every datetime returned is aware and in UTC.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime, time, timedelta, tzinfo
from datetime import timezone as dt_timezone
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from django_alarms import validation
from django_alarms.exceptions import InvalidAlarm, invalid, shown

__all__ = [
    "HORIZON",
    "MAX_CATCH_UP",
    "MAX_INTERVAL",
    "MISFIRE_POLICIES",
    "CatchUp",
    "Daily",
    "Days",
    "Hours",
    "Minutes",
    "Rate",
    "Recurrence",
    "Weekdays",
    "WeekdaysAndSaturday",
    "build",
]

MISFIRE_POLICIES = ("once", "skip", "all")
"""What a recurring alarm does when several occurrences are overdue at once (see
:meth:`Recurrence.catch_up`)."""

MAX_CATCH_UP = 100
"""The most occurrences the ``"all"`` policy delivers after one downtime."""

UTC = dt_timezone.utc

HORIZON = validation.LATEST
"""The latest occurrence a schedule has: occurrences after it (9999-12-30 UTC, the latest time
an alarm can hold) do not exist, and the schedule ends there (see
:meth:`Recurrence.ends_by_horizon`)."""

CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_JSON_VERSION = 1
_MICROSECOND = timedelta(microseconds=1)
_DAY = timedelta(days=1)
# croniter splits fields on ASCII whitespace only; count them the same way.
_FIELD_RE = re.compile(r"\S+", re.ASCII)
# croniter's "R" fields draw a fresh random value each time the expression is parsed, so the
# schedule would change every time it is loaded: refuse them.
_RANDOM_FIELD_RE = re.compile(r"r(\(\d+-\d+\))?(/\d+)?", re.ASCII | re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Rates


class Rate:
    """Base class of the rates: :class:`Minutes`, :class:`Hours`, :class:`Days`,
    :class:`Daily`, :class:`Weekdays` and :class:`WeekdaysAndSaturday`."""

    __slots__ = ()


MAX_INTERVAL = validation.LATEST - validation.EARLIEST
"""The longest interval of a schedule (``every``, and the ``n`` of :class:`Minutes`,
:class:`Hours` and :class:`Days`): the span of the times an alarm can hold (about 9,999
years). A longer one could never repeat."""


def _check_int(rate: Rate, name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("rate", rate, f"{name} must be an integer")
    if not low <= value <= high:
        raise invalid("rate", rate, f"{name} must be between {low:,} and {high:,}")


def _check_count(rate: Rate, value: object, unit: timedelta) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("rate", rate, "n must be an integer")
    if value < 1:
        raise invalid("rate", rate, "n must be a positive integer")
    if value > MAX_INTERVAL // unit:
        raise invalid(
            "rate",
            rate,
            f"n must be at most {MAX_INTERVAL // unit:,} (an interval longer than the span "
            "of the times an alarm can hold never repeats)",
        )


@dataclass(frozen=True, slots=True)
class Minutes(Rate):
    """Every ``n`` minutes of elapsed time, counted from ``start_at``."""

    n: int

    def __post_init__(self) -> None:
        _check_count(self, self.n, timedelta(minutes=1))


@dataclass(frozen=True, slots=True)
class Hours(Rate):
    """Every ``n`` hours of elapsed time, counted from ``start_at`` (unaffected by DST)."""

    n: int

    def __post_init__(self) -> None:
        _check_count(self, self.n, timedelta(hours=1))


@dataclass(frozen=True, slots=True)
class Days(Rate):
    """Every ``n`` calendar days from ``start_at``'s local date, at ``start_at``'s local time.

    The local time is kept across DST: a schedule started at 09:00 fires at 09:00 local time
    in summer and in winter.
    """

    n: int

    def __post_init__(self) -> None:
        _check_count(self, self.n, timedelta(days=1))


@dataclass(frozen=True, slots=True)
class _AtTime(Rate):
    hour: int
    minute: int = 0

    def __post_init__(self) -> None:
        _check_int(self, "hour", self.hour, 0, 23)
        _check_int(self, "minute", self.minute, 0, 59)


@dataclass(frozen=True, slots=True)
class Daily(_AtTime):
    """Every day at ``hour:minute`` local time."""


@dataclass(frozen=True, slots=True)
class Weekdays(_AtTime):
    """Monday to Friday at ``hour:minute`` local time."""


@dataclass(frozen=True, slots=True)
class WeekdaysAndSaturday(_AtTime):
    """Monday to Saturday at ``hour:minute`` local time."""


_RATE_TYPES: dict[str, type[Rate]] = {
    cls.__name__: cls for cls in (Minutes, Hours, Days, Daily, Weekdays, WeekdaysAndSaturday)
}
_RATE_DAYS_OF_WEEK = {Daily: "*", Weekdays: "1-5", WeekdaysAndSaturday: "1-6"}


# --------------------------------------------------------------------------------------------
# Wall time <-> instants


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    """The naive local wall time of an aware instant."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _instant(wall: datetime, zone: tzinfo) -> datetime:
    """The UTC instant at which the naive local ``wall`` time happens.

    An ambiguous wall time (fall back) maps to its first occurrence. A wall time inside a gap
    (spring forward) maps to the first instant after the gap, which is the transition itself.
    """
    wall = wall.replace(fold=0)
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    if _wall(instant, zone) == wall:
        return instant
    # In a gap the two folds use the offsets on either side of the transition: one maps
    # before it, the other after. The wall clock jumps over `wall` at the transition, so
    # search for the first microsecond whose wall time is not earlier than `wall`.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(instant, other), max(instant, other)
    steps = (high - low) // _MICROSECOND
    first = bisect.bisect_left(
        range(steps + 1), True, key=lambda i: _wall(low + i * _MICROSECOND, zone) >= wall
    )
    return low + first * _MICROSECOND


def _gaps(
    zone: tzinfo, first_wall: datetime, last_wall: datetime
) -> list[tuple[datetime, datetime]]:
    """The DST gaps (as ``[start, end)`` wall-time ranges) near ``first_wall..last_wall``."""
    if zone is UTC or getattr(zone, "key", None) == "UTC":
        return []
    # Offsets are sampled every 6 hours: no time zone changes its offset twice in 6 hours.
    step = timedelta(hours=6)
    # Two days either side, but not past the ends of time: every zone can show the instants
    # from EARLIEST to a day after HORIZON.
    moment = max(_instant(first_wall, zone), validation.EARLIEST + 2 * _DAY) - 2 * _DAY
    end = min(_instant(last_wall, zone), HORIZON - _DAY) + 2 * _DAY
    offset = moment.astimezone(zone).utcoffset()
    gaps: list[tuple[datetime, datetime]] = []
    while moment < end:
        later = min(moment + step, end)
        later_offset = later.astimezone(zone).utcoffset()
        if later_offset != offset:
            span = (later - moment) // _MICROSECOND
            base, before = moment, offset
            index = bisect.bisect_left(
                range(span + 1),
                True,
                key=lambda i: (base + i * _MICROSECOND).astimezone(zone).utcoffset() != before,
            )
            transition = (moment + index * _MICROSECOND).replace(tzinfo=None)
            if offset is not None and later_offset is not None and later_offset > offset:
                gaps.append((transition + offset, transition + later_offset))
            offset = later_offset
        moment = later
    return gaps


# --------------------------------------------------------------------------------------------
# Sequences of wall times


class _Walls(Protocol):
    def after(self, wall: datetime) -> Iterator[datetime]:
        """Wall times strictly after ``wall``, ascending."""
        ...

    def before(self, wall: datetime) -> Iterator[datetime]:
        """Wall times strictly before ``wall``, descending."""
        ...

    def count(self, first: datetime, last: datetime) -> int:
        """How many wall times lie in ``[first, last]``."""
        ...


# The Gregorian calendar repeats every 400 years (146,097 days, a whole number of weeks): a
# day pattern that matches once matches in every 400-year span, and one that does not match in
# 400 years never matches.
_CYCLE_YEARS = 400
# croniter raises OverflowError or ValueError when a search runs past year 9999 (or before
# year 1); only a search that starts this close to either end can do that.
_MARGIN = timedelta(days=366 * (_CYCLE_YEARS + 1))
_NEAR_THE_END = (datetime.min + _MARGIN, datetime.max - _MARGIN)


def _at_most_max(count: int, unit: timedelta) -> timedelta:
    """``count * unit``, or the longest timedelta if that is longer: past a few thousand years,
    every interval has the same single occurrence between year 1 and year 9999."""
    return unit * min(count, timedelta.max // unit)


def _cron_fields(expression: str) -> list[str]:
    return _FIELD_RE.findall(CRON_MACROS.get(expression, expression))


def _day_fields(fields: list[str]) -> tuple[int, int]:
    """The indexes of the day-of-month and day-of-week fields (seconds come first in six)."""
    return (2, 4) if len(fields) == 5 else (3, 5)


@functools.lru_cache(maxsize=256)
def _cron_parts(expression: str) -> tuple[str, ...]:
    """Expressions whose wall times, together, are those of ``expression``.

    Each one is matched with both day fields required (``day_or=False``) and matches at least
    once; the result is empty when ``expression`` never matches.

    When both the day of month and the day of week are restricted, either matching is enough
    (cron's OR): that is the union of the day-of-month expression with any day of week and the
    day-of-week expression with any day of month. croniter's own OR keeps ``#`` and ``W`` as
    conditions on both sides, so ``1 * 1#1`` would fire on first Mondays only. As in Vixie
    cron, a field that starts with ``*`` (or ``?``) is not restricted, even with a step
    (``*/2``): then both fields must match, so ``*/2 * 1`` is the odd days that are Mondays.
    """
    fields = _cron_fields(expression)
    day, weekday = _day_fields(fields)
    if fields[day][0] in "*?" or fields[weekday][0] in "*?":
        candidates = [fields]
    else:
        by_day, by_weekday = list(fields), list(fields)
        by_day[weekday] = "*"
        by_weekday[day] = "*"
        candidates = [by_day, by_weekday]
    parts = (" ".join(candidate) for candidate in candidates)
    return tuple(part for part in parts if _matches_some_day(part))


def _cron_iterator(part: str, wall: datetime) -> croniter[datetime]:
    return croniter(
        part,
        wall,
        ret_type=datetime,
        day_or=False,
        second_at_beginning=True,
        max_years_between_matches=_CYCLE_YEARS,
    )


def _matches_some_day(part: str) -> bool:
    try:
        _cron_iterator(part, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _walk(part: str, wall: datetime, *, backwards: bool) -> Iterator[datetime]:
    """The wall times of one part strictly after (or before) ``wall``, until the end of time."""
    iterator = _cron_iterator(part, wall)
    step = iterator.get_prev if backwards else iterator.get_next
    while True:
        try:
            wall = step(datetime)
        except CroniterBadDateError:
            return
        except (OverflowError, ValueError):
            if _NEAR_THE_END[0] < wall < _NEAR_THE_END[1]:
                raise
            return  # the search passed year 9999 (or year 1)
        yield wall


def _distinct(walls: Iterator[datetime]) -> Iterator[datetime]:
    previous: datetime | None = None
    for wall in walls:
        if wall != previous:
            yield wall
            previous = wall


@functools.lru_cache(maxsize=64)
def _times_of_day(expression: str) -> array[int]:
    """The seconds since midnight at which a cron expression fires on a day that matches.

    Cron's hour, minute and second fields do not depend on the date, so every matching day
    has the same times: that lets a long downtime be counted one day at a time.
    """
    expanded = croniter.expand(expression, second_at_beginning=True)[0]

    def values(index: int, top: int) -> list[int]:
        if index >= len(expanded):
            return [0]
        field = expanded[index]
        return list(range(top)) if "*" in field else [int(value) for value in field]

    # An array of C ints: an every-second expression has 86400 of them.
    return array(
        "i",
        sorted(
            hour * 3600 + minute * 60 + second
            for hour in values(1, 24)
            for minute in values(0, 60)
            for second in values(5, 60)
        ),
    )


@dataclass(frozen=True, slots=True)
class _CronWalls:
    expression: str

    def after(self, wall: datetime) -> Iterator[datetime]:
        parts = _cron_parts(self.expression)
        return _distinct(heapq.merge(*(_walk(part, wall, backwards=False) for part in parts)))

    def before(self, wall: datetime) -> Iterator[datetime]:
        parts = _cron_parts(self.expression)
        walks = (_walk(part, wall, backwards=True) for part in parts)
        return _distinct(heapq.merge(*walks, reverse=True))

    def count(self, first: datetime, last: datetime) -> int:
        times = _times_of_day(self.expression)
        last_second = last.hour * 3600 + last.minute * 60 + last.second
        cursor = first - _MICROSECOND
        total = 0
        while True:
            wall = next(self.after(cursor), None)
            if wall is None or wall > last:
                return total
            # `wall` is the first match of its day not before `first`; every later time of
            # day matches too, up to the end of the day or `last`.
            second = wall.hour * 3600 + wall.minute * 60 + wall.second
            top = last_second if wall.date() == last.date() else 86399
            total += bisect.bisect_right(times, top) - bisect.bisect_left(times, second)
            if wall.date() == last.date():
                return total
            cursor = datetime.combine(wall.date() + _DAY, time()) - _MICROSECOND


@dataclass(frozen=True, slots=True)
class _DayWalls:
    origin: datetime  # the first wall time
    step: timedelta  # a whole number of days

    def after(self, wall: datetime) -> Iterator[datetime]:
        index = max(0, (wall - self.origin) // self.step + 1)
        while True:
            try:
                yield self.origin + index * self.step
            except OverflowError:
                return  # past year 9999
            index += 1

    def before(self, wall: datetime) -> Iterator[datetime]:
        index = -((self.origin - wall) // self.step) - 1  # ceil((wall - origin) / step) - 1
        while index >= 0:
            yield self.origin + index * self.step
            index -= 1

    def count(self, first: datetime, last: datetime) -> int:
        low = max(0, -((self.origin - first) // self.step))
        high = (last - self.origin) // self.step
        return max(0, high - low + 1)


# --------------------------------------------------------------------------------------------
# The recurrence


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What to do with a due occurrence of a recurring alarm: see :meth:`Recurrence.catch_up`."""

    deliver: datetime | None
    """The occurrence to deliver now, or ``None`` to deliver nothing."""
    resume: datetime | None
    """The occurrence to schedule next, or ``None`` when the schedule has ended."""
    missed: int
    """How many overdue occurrences this decision does not deliver."""


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A validated recurring schedule. Build one with :func:`build`.

    Exactly one of ``cron``, ``every`` and ``rate`` is set. ``start_at`` and ``end_at`` are
    aware UTC datetimes; ``timezone`` is an IANA key such as ``"Europe/Paris"``.
    """

    cron: str | None
    every: timedelta | None
    rate: Rate | None
    timezone: str
    start_at: datetime
    end_at: datetime | None
    misfire: str

    def __post_init__(self) -> None:
        # Adding a timedelta to a datetime in a ZoneInfo zone is wall-clock arithmetic: keep
        # the bounds in UTC so that elapsed-time schedules stay exact across DST.
        object.__setattr__(self, "start_at", _as_utc(self.start_at, "start_at"))
        if self.end_at is not None:
            object.__setattr__(self, "end_at", _as_utc(self.end_at, "end_at"))

    # -- public API --------------------------------------------------------------------------

    def first(self) -> datetime | None:
        """The first occurrence at or after ``start_at`` (``start_at`` itself for elapsed-time
        schedules), or ``None`` if it would fall after ``end_at`` or :data:`HORIZON`."""
        return self._within_end(self._next(self.start_at - _MICROSECOND))

    def next_after(self, when: datetime) -> datetime | None:
        """The first occurrence strictly after ``when``, or ``None`` if it would fall after
        ``end_at`` or :data:`HORIZON` (:meth:`ends_by_horizon` tells which).

        Pass the occurrence that was *scheduled*, not the time it finished, so that the
        schedule never drifts.
        """
        return self._within_end(self._next(_as_utc(when, "when")))

    def ends_by_horizon(self, after: datetime | None = None) -> bool:
        """Whether the schedule has no occurrence after ``after`` because the next one would
        fall after :data:`HORIZON` (9999-12-30 UTC, the latest time an alarm can hold), and not
        because of ``end_at``.

        ``True`` exactly when :meth:`next_after` returns ``None`` for ``after`` and ``end_at``
        is unset or later than :data:`HORIZON`; without ``after``, the same about
        :meth:`first`. ``False`` when an occurrence follows, or when ``end_at`` (at or before
        the horizon) ends the schedule first.
        """
        if self.end_at is not None and self.end_at <= HORIZON:
            return False
        if after is None:
            return self.first() is None
        return self.next_after(after) is None

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` occurrences strictly after ``after`` (fewer if ``end_at`` stops
        the schedule first)."""
        result: list[datetime] = []
        if count <= 0:
            return result
        for occurrence in self._ascending(_as_utc(after, "after")):
            if self.end_at is not None and occurrence > self.end_at:
                break
            result.append(occurrence)
            if len(result) == count:
                break
        return result

    def catch_up(self, occurrence: datetime, now: datetime) -> CatchUp:
        """Decide what to deliver when ``occurrence`` (at or before ``now``) is due.

        A single overdue occurrence is ordinary lateness: it is delivered and the schedule
        resumes at the next one. When several are overdue (the workers were down), the
        ``misfire`` policy decides. Say an hourly schedule's 08:00 occurrence is handled at
        11:30, so 08:00, 09:00, 10:00 and 11:00 are overdue:

        * ``"once"`` delivers 11:00 (the latest), resumes at 12:00; missed 3.
        * ``"skip"`` delivers nothing, resumes at 12:00; missed 4.
        * ``"all"`` delivers 08:00 and resumes at 09:00, which is overdue too, so the caller
          delivers it next, and so on. At most :data:`MAX_CATCH_UP` occurrences are
          delivered: beyond that, the oldest ones are dropped and counted as missed.

        The resume time is ``None`` when the schedule ends (past ``end_at`` or
        :data:`HORIZON`).
        """
        occurrence = _as_utc(occurrence, "occurrence")
        now = _as_utc(now, "now")
        following = self.next_after(occurrence)
        if following is None or following > now:
            return CatchUp(deliver=occurrence, resume=following, missed=0)
        horizon = min(now, HORIZON) if self.end_at is None else min(now, self.end_at, HORIZON)
        overdue = 1 + self._count(occurrence, horizon)
        if self.misfire == "all":
            if overdue <= MAX_CATCH_UP:
                return CatchUp(deliver=occurrence, resume=following, missed=0)
            oldest_kept = self._latest(horizon, MAX_CATCH_UP)
            return CatchUp(
                deliver=oldest_kept,
                resume=self.next_after(oldest_kept),
                missed=overdue - MAX_CATCH_UP,
            )
        resume = self.next_after(now)
        if self.misfire == "skip":
            return CatchUp(deliver=None, resume=resume, missed=overdue)
        return CatchUp(deliver=self._latest(horizon, 1), resume=resume, missed=overdue - 1)

    def describe(self) -> str:
        """The schedule in words, for example ``"At 17:00, Monday through Friday
        (Europe/Paris)"`` or ``"Every 30 seconds"``."""
        if self.cron is not None:
            return f"{_describe_cron(self.cron)} ({self.timezone})"
        if self.every is not None:
            return _describe_interval(self.every)
        rate = self.rate
        if isinstance(rate, Minutes):
            return _describe_interval(timedelta(minutes=rate.n))
        if isinstance(rate, Hours):
            return _describe_interval(timedelta(hours=rate.n))
        if isinstance(rate, Days):
            local = self.start_at.astimezone(self._zone())
            days = "day" if rate.n == 1 else f"{rate.n} days"
            return f"Every {days} at {_clock(local.time())} ({self.timezone})"
        assert isinstance(rate, _AtTime)
        clock = _clock(time(rate.hour, rate.minute))
        words = {
            Daily: f"Every day at {clock}",
            Weekdays: f"At {clock}, Monday through Friday",
            WeekdaysAndSaturday: f"At {clock}, Monday through Saturday",
        }[type(rate)]
        return f"{words} ({self.timezone})"

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` turns it back into an equal
        :class:`Recurrence`."""
        every: int | float | None = None
        every_microseconds: int | None = None
        if self.every is not None:
            whole = self.every % timedelta(seconds=1) == timedelta(0)
            every = self.every // timedelta(seconds=1) if whole else self.every.total_seconds()
            if not whole:
                # A float of seconds loses microseconds past about 100 days; the exact count
                # goes alongside it (a release that does not know it still reads "every").
                every_microseconds = self.every // _MICROSECOND
        rate: dict[str, Any] | None = None
        if self.rate is not None:
            rate = {"type": type(self.rate).__name__}
            rate.update(
                (field.name, getattr(self.rate, field.name))
                for field in fields(cast(Any, self.rate))
            )
        data: dict[str, Any] = {
            "version": _JSON_VERSION,
            "cron": self.cron,
            "every": every,
            "rate": rate,
            "timezone": self.timezone,
            "start_at": self.start_at.isoformat(),
            "end_at": None if self.end_at is None else self.end_at.isoformat(),
            "misfire": self.misfire,
        }
        if every_microseconds is not None:
            data["every_microseconds"] = every_microseconds
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recurrence:
        """Rebuild (and re-validate) a :class:`Recurrence` stored with :meth:`to_json`."""
        try:
            if data.get("version", _JSON_VERSION) != _JSON_VERSION:
                raise invalid("recurrence", data, "unknown format version")
            rate = None
            if data.get("rate") is not None:
                arguments = dict(data["rate"])
                rate_type = _RATE_TYPES.get(arguments.pop("type"))
                if rate_type is None:
                    raise invalid("rate", data["rate"], "unknown rate type")
                rate = rate_type(**arguments)
            every = data.get("every")
            exact = data.get("every_microseconds")
            if exact is not None:
                count = validation.whole(
                    "every_microseconds", exact, high=MAX_INTERVAL // _MICROSECOND
                )
                every = timedelta(microseconds=count)
            elif every is not None:
                every = timedelta(seconds=every)
            end_at = data.get("end_at")
            return build(
                cron=data.get("cron"),
                every=every,
                rate=rate,
                timezone=data["timezone"],
                start_at=datetime.fromisoformat(data["start_at"]),
                end_at=None if end_at is None else datetime.fromisoformat(end_at),
                misfire=data["misfire"],
            )
        except InvalidAlarm:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as error:
            raise invalid("recurrence", data, f"not a stored recurrence ({shown(error)})")

    # -- internals ---------------------------------------------------------------------------

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _interval(self) -> timedelta | None:
        if self.every is not None:
            return self.every
        if isinstance(self.rate, Minutes):
            return _at_most_max(self.rate.n, timedelta(minutes=1))
        if isinstance(self.rate, Hours):
            return _at_most_max(self.rate.n, timedelta(hours=1))
        return None

    def _walls(self) -> _Walls:
        if self.cron is not None:
            return _CronWalls(self.cron)
        if isinstance(self.rate, Days):
            local = self.start_at.astimezone(self._zone())
            step = _at_most_max(self.rate.n, _DAY)
            return _DayWalls(local.replace(tzinfo=None, fold=0), step)
        assert isinstance(self.rate, _AtTime)
        day_of_week = _RATE_DAYS_OF_WEEK[type(self.rate)]
        return _CronWalls(f"{self.rate.minute} {self.rate.hour} * * {day_of_week}")

    def _within_end(self, occurrence: datetime | None) -> datetime | None:
        if occurrence is None or (self.end_at is not None and occurrence > self.end_at):
            return None
        return occurrence

    def _next(self, when: datetime) -> datetime | None:
        """The first occurrence after ``when`` (and not before ``start_at``), ignoring
        ``end_at``."""
        return next(self._ascending(when), None)

    def _ascending(self, when: datetime) -> Iterator[datetime]:
        """Occurrences strictly after ``when`` and not after :data:`HORIZON`, ascending,
        ignoring ``end_at``."""
        interval = self._interval()
        if interval is not None:
            index = max(0, (when - self.start_at) // interval + 1)
            while True:
                try:
                    occurrence = self.start_at + index * interval
                except OverflowError:
                    return
                if occurrence > HORIZON:
                    return
                yield occurrence
                index += 1
        else:
            for occurrence, _wall_time in self._ascending_walls(when):
                yield occurrence

    def _ascending_walls(self, when: datetime) -> Iterator[tuple[datetime, datetime]]:
        """(occurrence, smallest wall time mapping to it) after ``when`` and not after
        :data:`HORIZON`, ascending."""
        zone = self._zone()
        previous = max(when, self.start_at - _MICROSECOND)
        if previous >= HORIZON:
            return
        # Wall times up to the local time of `previous` map to `previous` or earlier.
        for wall in self._walls().after(_wall(previous, zone)):
            try:
                occurrence = _instant(wall, zone)
            except OverflowError:
                return  # after year 9999 in UTC
            if occurrence > HORIZON:
                return
            if occurrence > previous:
                yield occurrence, wall
                previous = occurrence

    def _descending_walls(self, when: datetime) -> Iterator[tuple[datetime, datetime]]:
        """(occurrence, largest wall time mapping to it) at or before ``when`` and not
        before ``start_at``, descending."""
        zone = self._zone()
        local = when.astimezone(zone)
        # During the second pass of a fall-back hour, wall times up to an hour *later* than
        # the local time of `when` map to the first pass, before `when`: start above them.
        first_pass, offset = local.replace(fold=0).utcoffset(), local.utcoffset()
        assert first_pass is not None
        assert offset is not None
        shift = max(timedelta(0), first_pass - offset)
        start = local.replace(tzinfo=None, fold=0) + shift + _MICROSECOND
        previous: datetime | None = None
        for wall in self._walls().before(start):
            occurrence = _instant(wall, zone)
            if occurrence > when or (previous is not None and occurrence >= previous):
                continue
            if occurrence < self.start_at:
                return
            yield occurrence, wall
            previous = occurrence

    def _latest(self, when: datetime, rank: int) -> datetime:
        """The ``rank``-th most recent occurrence at or before ``when`` (1: the latest).

        The caller knows that at least ``rank`` occurrences exist.
        """
        interval = self._interval()
        if interval is not None:
            return self.start_at + ((when - self.start_at) // interval - (rank - 1)) * interval
        for occurrence, _wall_time in self._descending_walls(when):
            rank -= 1
            if rank == 0:
                return occurrence
        raise AssertionError("fewer occurrences than expected")

    def _count(self, after: datetime, upto: datetime) -> int:
        """How many occurrences lie in ``(after, upto]``, without iterating over them."""
        interval = self._interval()
        if interval is not None:
            last = (upto - self.start_at) // interval
            first = max((after - self.start_at) // interval, -1)
            return max(0, last - first)
        earliest = next(self._ascending_walls(after), None)
        if earliest is None or earliest[0] > upto:
            return 0
        latest = next(self._descending_walls(upto), None)
        assert latest is not None
        first_wall, last_wall = earliest[1], latest[1]
        walls = self._walls()
        total = walls.count(first_wall, last_wall)
        # Every wall time inside a DST gap, and the one at its end, happen at the same
        # instant: they are one occurrence.
        for gap_start, gap_end in _gaps(self._zone(), first_wall, last_wall):
            low, high = max(gap_start, first_wall), min(gap_end, last_wall)
            if low <= high:
                total -= max(0, walls.count(low, high) - 1)
        return total


# --------------------------------------------------------------------------------------------
# Building and validating


def build(
    *,
    cron: str | None = None,
    every: timedelta | int | float | None = None,
    rate: Rate | None = None,
    timezone: str | tzinfo | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    misfire: str = "once",
    now: datetime | None = None,
) -> Recurrence:
    """Validate the arguments of a recurring schedule and return a :class:`Recurrence`.

    Exactly one of ``cron`` (5 fields, 6 fields with seconds first, or one of the macros
    ``@yearly @annually @monthly @weekly @daily @midnight @hourly``), ``every`` (a timedelta
    or a number of seconds) and ``rate`` is required. ``timezone`` defaults to
    ``settings.TIME_ZONE``; ``start_at`` defaults to ``now`` (itself defaulting to the
    current time). Raises :class:`~django_alarms.exceptions.InvalidAlarm`, naming the field
    and the value, for any bad input.
    """
    given = {
        name: value
        for name, value in (("cron", cron), ("every", every), ("rate", rate))
        if value is not None
    }
    if len(given) != 1:
        raise invalid(
            "cron/every/rate", given or None, "exactly one of cron, every or rate is required"
        )
    if cron is not None:
        cron = _valid_cron(cron)
    if every is not None:
        every = _valid_every(every)
    if rate is not None and type(rate) not in _RATE_TYPES.values():
        raise invalid("rate", rate, f"must be one of {', '.join(_RATE_TYPES)}")
    if misfire not in MISFIRE_POLICIES:
        raise invalid("misfire", misfire, f"must be one of {', '.join(MISFIRE_POLICIES)}")
    zone_key = _valid_timezone(timezone)
    if now is None:
        now = datetime.now(UTC)
    now = _aware(now, "now")
    start_at = now if start_at is None else _aware(start_at, "start_at")
    if end_at is not None:
        if _aware(end_at, "end_at") <= start_at:
            raise invalid("end_at", end_at, f"must be after start_at ({start_at.isoformat()})")
        end_at = end_at.astimezone(UTC)
    return Recurrence(
        cron=cron,
        every=every,
        rate=rate,
        timezone=zone_key,
        start_at=start_at,
        end_at=end_at,
        misfire=misfire,
    )


def _valid_cron(cron: object) -> str:
    if not isinstance(cron, str):
        raise invalid("cron", cron, "must be a string")
    expression = cron.strip()
    if expression.startswith("@"):
        if expression.lower() not in CRON_MACROS:
            raise invalid("cron", cron, f"unknown macro; use one of {', '.join(CRON_MACROS)}")
        return expression.lower()
    parts = _FIELD_RE.findall(expression)
    if len(parts) not in (5, 6):
        raise invalid("cron", cron, f"expected 5 fields, or 6 with seconds first, not {len(parts)}")
    if any(_RANDOM_FIELD_RE.fullmatch(part) for part in parts):
        raise invalid("cron", cron, "random (R) fields are not supported")
    try:
        croniter.expand(expression, second_at_beginning=True)
    except (CroniterError, ValueError) as error:
        raise invalid("cron", cron, f"invalid cron expression ({error})")
    if not _cron_parts(expression):
        raise invalid("cron", cron, "the expression never matches a date")
    return expression


def _valid_every(every: object) -> timedelta:
    if isinstance(every, bool) or not isinstance(every, timedelta | int | float):
        raise invalid("every", every, "must be a timedelta or a number of seconds")
    interval = every
    if not isinstance(interval, timedelta):
        if isinstance(interval, float) and not math.isfinite(interval):
            raise invalid("every", every, "must be a finite number of seconds")
        try:
            interval = timedelta(seconds=interval)
        except OverflowError:
            raise invalid("every", every, f"must be at most {MAX_INTERVAL.days:,} days") from None
    if interval <= timedelta(0):
        raise invalid("every", every, "must be positive (at least one microsecond)")
    if interval > MAX_INTERVAL:
        raise invalid(
            "every",
            every,
            f"must be at most {MAX_INTERVAL.days:,} days (the span of the times an alarm can hold)",
        )
    return interval


MAX_TIMEZONE_LENGTH = 64
"""The longest time zone key accepted (the longest IANA key has 32 characters)."""


def _valid_timezone(timezone: object) -> str:
    if timezone is None:
        return _default_timezone()
    if timezone is UTC:
        return "UTC"
    if isinstance(timezone, tzinfo):
        key = getattr(timezone, "key", None)
        if not isinstance(key, str):
            raise invalid("timezone", timezone, "must be an IANA time zone (a ZoneInfo or a key)")
        timezone = key
    if not isinstance(timezone, str):
        raise invalid("timezone", timezone, "must be an IANA time zone key such as 'Europe/Paris'")
    if len(timezone) > MAX_TIMEZONE_LENGTH:
        raise invalid(
            "timezone",
            timezone,
            f"unknown time zone (longer than {MAX_TIMEZONE_LENGTH} characters)",
        )
    validation.text("timezone", timezone)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a folder of the time zone database ("Europe"), or a name the file system
        # cannot look up.
        raise invalid("timezone", timezone, "unknown time zone") from None
    return timezone


def _default_timezone() -> str:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        key = getattr(settings, "TIME_ZONE", None)
    except ImproperlyConfigured:
        key = None
    return _valid_timezone(key or "UTC")


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise invalid(field, value, "must be an aware datetime")
    if value.utcoffset() is None:
        raise invalid(field, value, "must be an aware datetime, not a naive one")
    return validation.storable(field, value).astimezone(UTC)


def _as_utc(value: datetime, field: str) -> datetime:
    if value.utcoffset() is None:
        raise invalid(field, value, "must be an aware datetime, not a naive one")
    return value.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Words


def _describe_cron(expression: str) -> str:
    fallback = f"cron '{expression}'"
    try:
        from cron_descriptor import ExpressionDescriptor, Options
    except ImportError:
        return fallback
    text = CRON_MACROS.get(expression, expression)
    if len(_FIELD_RE.findall(text)) == 6:
        text += " *"  # seconds first, then an explicit year: cron_descriptor's 7-field form
    try:
        try:
            options = Options(locale_code="en_US", use_24hour_time_format=True)
        except TypeError:  # cron-descriptor < 2: options are attributes
            options = Options()
            options.locale_code = "en_US"
            options.use_24hour_time_format = True
        return str(ExpressionDescriptor(text, options).get_description())
    except Exception:
        # The description is a courtesy: syntax that croniter accepts and cron_descriptor
        # does not must not break the admin page that shows it.
        return fallback


def _describe_interval(interval: timedelta) -> str:
    for unit, size in (
        ("day", _DAY),
        ("hour", timedelta(hours=1)),
        ("minute", timedelta(minutes=1)),
        ("second", timedelta(seconds=1)),
    ):
        if interval % size == timedelta(0):
            count = interval // size
            return f"Every {unit}" if count == 1 else f"Every {count} {unit}s"
    return f"Every {interval.total_seconds():g} seconds"


def _clock(moment: time) -> str:
    text = f"{moment.hour:02d}:{moment.minute:02d}"
    if moment.second or moment.microsecond:
        text += f":{moment.second:02d}"
    return text
