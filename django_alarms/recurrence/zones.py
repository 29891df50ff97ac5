"""Time zones: local wall times and the instants they happen at, DST gaps, time zone keys.

A wall time is a naive datetime read on a clock in a time zone; an instant is an aware UTC
datetime. :func:`_instant` says how a wall time that does not exist (spring forward) or exists
twice (fall back) maps to an instant.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta, tzinfo
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django_alarms import validation
from django_alarms.exceptions import invalid

UTC = dt_timezone.utc

HORIZON = validation.LATEST
"""The latest occurrence a schedule has: occurrences after it (9999-12-30 UTC, the latest time
an alarm can hold) do not exist, and the schedule ends there (see
:meth:`~django_alarms.recurrence.Recurrence.ends_by_horizon`)."""


_MICROSECOND = timedelta(microseconds=1)
_DAY = timedelta(days=1)


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
