"""The recurrence: :class:`Recurrence`, what :meth:`Recurrence.catch_up` decides, :func:`build`
with its checks, and the stored (JSON) form.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, tzinfo
from typing import Any, cast
from zoneinfo import ZoneInfo

from django_alarms import validation
from django_alarms.exceptions import InvalidAlarm, invalid, shown
from django_alarms.recurrence.cron import _CronWalls, _DayWalls, _valid_cron, _Walls
from django_alarms.recurrence.rates import (
    _RATE_DAYS_OF_WEEK,
    _RATE_TYPES,
    MAX_INTERVAL,
    Days,
    Hours,
    Minutes,
    Rate,
    _at_most_max,
    _AtTime,
)
from django_alarms.recurrence.words import _describe
from django_alarms.recurrence.zones import (
    _DAY,
    _MICROSECOND,
    HORIZON,
    UTC,
    _gaps,
    _instant,
    _valid_timezone,
    _wall,
)

MISFIRE_POLICIES = ("once", "skip", "all")
"""What a recurring alarm does when several occurrences are overdue at once (see
:meth:`Recurrence.catch_up`)."""

MAX_CATCH_UP = 100
"""The most occurrences the ``"all"`` policy delivers after one downtime."""


_JSON_VERSION = 1


#: Next occurrences of wall-clock schedules, by (cron, rate, time zone, instant): see
#: :meth:`Recurrence._next`. Emptied when full.
_NEXT_WALLS: dict[tuple[object, ...], datetime | None] = {}
_NEXT_WALLS_MAX = 4096


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
        return _describe(self)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` turns it back into an equal
        :class:`Recurrence`."""
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recurrence:
        """Rebuild (and re-validate) a :class:`Recurrence` stored with :meth:`to_json`."""
        return _from_data(cls, data, trusted=False)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Recurrence:
        """Rebuild a :class:`Recurrence` that :meth:`to_json` wrote, without validating it again.

        The worker reads a stored schedule once per delivery: :func:`build` already validated
        it when it was scheduled, and its checks (a cron expression that never matches, over a
        400-year cycle) cost far more than the delivery. Only the format is checked here; what
        this version cannot read at all raises :class:`~django_alarms.exceptions.InvalidAlarm`
        as :meth:`from_json` does."""
        return _from_data(cls, data, trusted=True)

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
        if self._interval() is not None:  # arithmetic
            return next(self._ascending(when), None)
        # A walk of cron's fields costs tens of microseconds, and a delivery asks twice for
        # the same occurrence (the catch-up at the claim, the next occurrence at the end);
        # alarms of one schedule due at one instant (every user's 09:00 reminder) ask for the
        # same one too. After start_at, the answer depends on the fields, the zone and the
        # instant only: remember it by those.
        previous = max(when, self.start_at - _MICROSECOND)
        key = (self.cron, self.rate, self.timezone, previous)
        try:
            return _NEXT_WALLS[key]
        except KeyError:
            pass
        found = next((occurrence for occurrence, _ in self._ascending_walls(previous)), None)
        if len(_NEXT_WALLS) >= _NEXT_WALLS_MAX:
            _NEXT_WALLS.clear()
        _NEXT_WALLS[key] = found
        return found

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
# The stored form


def _to_json(recurrence: Recurrence) -> dict[str, Any]:
    every: int | float | None = None
    every_microseconds: int | None = None
    if recurrence.every is not None:
        whole = recurrence.every % timedelta(seconds=1) == timedelta(0)
        every = (
            recurrence.every // timedelta(seconds=1) if whole else recurrence.every.total_seconds()
        )
        if not whole:
            # A float of seconds loses microseconds past about 100 days; the exact count
            # goes alongside it (a release that does not know it still reads "every").
            every_microseconds = recurrence.every // _MICROSECOND
    rate: dict[str, Any] | None = None
    if recurrence.rate is not None:
        rate = {"type": type(recurrence.rate).__name__}
        rate.update(
            (field.name, getattr(recurrence.rate, field.name))
            for field in fields(cast(Any, recurrence.rate))
        )
    data: dict[str, Any] = {
        "version": _JSON_VERSION,
        "cron": recurrence.cron,
        "every": every,
        "rate": rate,
        "timezone": recurrence.timezone,
        "start_at": recurrence.start_at.isoformat(),
        "end_at": None if recurrence.end_at is None else recurrence.end_at.isoformat(),
        "misfire": recurrence.misfire,
    }
    if every_microseconds is not None:
        data["every_microseconds"] = every_microseconds
    return data


def _from_data(cls: type[Recurrence], data: dict[str, Any], *, trusted: bool) -> Recurrence:
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
            count = validation.whole("every_microseconds", exact, high=MAX_INTERVAL // _MICROSECOND)
            every = timedelta(microseconds=count)
        elif every is not None:
            every = timedelta(seconds=every)
        end_at = data.get("end_at")
        values = {
            "cron": data.get("cron"),
            "every": every,
            "rate": rate,
            "timezone": data["timezone"],
            "start_at": datetime.fromisoformat(data["start_at"]),
            "end_at": None if end_at is None else datetime.fromisoformat(end_at),
            "misfire": data["misfire"],
        }
        if trusted:
            return cls(**values)
        return build(**values)
    except InvalidAlarm:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as error:
        raise invalid("recurrence", data, f"not a stored recurrence ({shown(error)})")


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
