"""The rates: schedules named by their unit (:class:`Minutes`, :class:`Daily`, ...).

Each rate checks its own fields when it is made and raises
:class:`~django_alarms.exceptions.InvalidAlarm` for a bad one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django_alarms import validation
from django_alarms.exceptions import invalid


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


def _at_most_max(count: int, unit: timedelta) -> timedelta:
    """``count * unit``, or the longest timedelta if that is longer: past a few thousand years,
    every interval has the same single occurrence between year 1 and year 9999."""
    return unit * min(count, timedelta.max // unit)
