"""Schedules in words, for the admin and the logs (:meth:`Recurrence.describe`).

Cron expressions are put into words by ``cron_descriptor`` when it is installed; without it,
or for syntax it does not read, the expression itself is shown.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from django_alarms.recurrence.cron import _FIELD_RE, CRON_MACROS
from django_alarms.recurrence.rates import (
    Daily,
    Days,
    Hours,
    Minutes,
    Rate,
    Weekdays,
    WeekdaysAndSaturday,
    _AtTime,
)
from django_alarms.recurrence.zones import _DAY


class _Described(Protocol):
    """What a description reads of a schedule (a :class:`Recurrence` has it all)."""

    @property
    def cron(self) -> str | None: ...
    @property
    def every(self) -> timedelta | None: ...
    @property
    def rate(self) -> Rate | None: ...
    @property
    def timezone(self) -> str: ...
    @property
    def start_at(self) -> datetime: ...


def _describe(recurrence: _Described) -> str:
    """What :meth:`Recurrence.describe` returns."""
    if recurrence.cron is not None:
        return f"{_describe_cron(recurrence.cron)} ({recurrence.timezone})"
    if recurrence.every is not None:
        return _describe_interval(recurrence.every)
    rate = recurrence.rate
    if isinstance(rate, Minutes):
        return _describe_interval(timedelta(minutes=rate.n))
    if isinstance(rate, Hours):
        return _describe_interval(timedelta(hours=rate.n))
    if isinstance(rate, Days):
        local = recurrence.start_at.astimezone(ZoneInfo(recurrence.timezone))
        days = "day" if rate.n == 1 else f"{rate.n} days"
        return f"Every {days} at {_clock(local.time())} ({recurrence.timezone})"
    assert isinstance(rate, _AtTime)
    clock = _clock(time(rate.hour, rate.minute))
    words = {
        Daily: f"Every day at {clock}",
        Weekdays: f"At {clock}, Monday through Friday",
        WeekdaysAndSaturday: f"At {clock}, Monday through Saturday",
    }[type(rate)]
    return f"{words} ({recurrence.timezone})"


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
