"""Checks shared by every layer that accepts a value from outside (the service layer, the
handler registry, recurrences, handlers' answers, settings): one meaning for "a time the
database can store", whichever module asks.

It imports only :mod:`django_alarms.exceptions`, so that any module may use it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .exceptions import invalid

EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
"""The earliest instant an alarm may carry. A day after the first representable one, so that the
instant can be shown in any time zone (``astimezone`` of year 1 to a negative offset fails) and
read back by every database driver (PostgreSQL stores an offset of +05:00 on 0001-01-01 as a
date before the Common Era, which psycopg cannot read)."""

LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)
"""The latest instant an alarm may carry, a day before the last representable one for the same
reasons: PostgreSQL stores ``9999-12-31 20:00-05:00`` as year 10000 in UTC, which no Python
``datetime`` can hold, and the admin shows times in the project's time zone."""


def storable(field: str, value: datetime) -> datetime:
    """``value`` (an aware datetime) if every database can store its instant and read it back;
    otherwise :class:`~django_alarms.exceptions.InvalidAlarm` naming ``field``."""
    try:
        instant = value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        instant = None
    if instant is None or not EARLIEST <= instant <= LATEST:
        raise invalid(
            field,
            value,
            f"is outside the times an alarm can hold ({EARLIEST.date().isoformat()} to "
            f"{LATEST.date().isoformat()}, UTC)",
        )
    return value


_PAST_LATEST = f"puts the alarm past {LATEST.date().isoformat()} (UTC)"


def storable_after(field: str, start: datetime, delta: timedelta) -> datetime:
    """``start + delta`` if that instant is storable (see :func:`storable`), else
    :class:`~django_alarms.exceptions.InvalidAlarm` naming ``field`` and ``delta``."""
    try:
        moment = start + delta
    except OverflowError:
        raise invalid(field, delta, _PAST_LATEST) from None
    try:
        return storable(field, moment)
    except ValueError:
        raise invalid(field, delta, _PAST_LATEST) from None
