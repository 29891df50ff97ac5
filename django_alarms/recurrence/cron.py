"""Sequences of wall times: cron expressions (parsed by croniter) and steps of whole days.

A cron expression is walked forwards or backwards over local wall times; turning those into
instants is :mod:`~django_alarms.recurrence.zones`' job. The parsed expressions are cached,
and each thread keeps a few croniter objects per expression to reuse.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import re
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Protocol

from croniter import CroniterBadDateError, CroniterError, croniter

from django_alarms.exceptions import invalid
from django_alarms.recurrence.zones import _DAY, _MICROSECOND

CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


# croniter splits fields on ASCII whitespace only; count them the same way.
_FIELD_RE = re.compile(r"\S+", re.ASCII)
# croniter's "R" fields draw a fresh random value each time the expression is parsed, so the
# schedule would change every time it is loaded: refuse them.
_RANDOM_FIELD_RE = re.compile(r"r(\(\d+-\d+\))?(/\d+)?", re.ASCII | re.IGNORECASE)


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


#: Per thread, croniter objects not in use, by expression: building one parses its expression
#: (about 200 us, against 4 us to move one that exists to a new start). A walk borrows one
#: and gives it back when it ends, so two walks never share one.
_idle_iterators = threading.local()
_IDLE_ITERATORS_MAX = 256


def _borrow_iterator(part: str, wall: datetime) -> croniter[datetime]:
    idle: dict[str, list[croniter[datetime]]] | None = getattr(_idle_iterators, "by_part", None)
    spare = idle.get(part) if idle is not None else None
    if not spare:
        return _cron_iterator(part, wall)
    iterator = spare.pop()
    iterator.set_current(wall, force=True)
    return iterator


def _give_back_iterator(part: str, iterator: croniter[datetime]) -> None:
    idle: dict[str, list[croniter[datetime]]] | None = getattr(_idle_iterators, "by_part", None)
    if idle is None or len(idle) > _IDLE_ITERATORS_MAX:
        idle = _idle_iterators.by_part = {}
    spare = idle.setdefault(part, [])
    if len(spare) < 4:
        spare.append(iterator)


def _walk(part: str, wall: datetime, *, backwards: bool) -> Iterator[datetime]:
    """The wall times of one part strictly after (or before) ``wall``, until the end of time."""
    iterator = _borrow_iterator(part, wall)
    try:
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
    finally:
        _give_back_iterator(part, iterator)


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
