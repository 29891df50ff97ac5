"""Recurring schedules: cron expressions, fixed intervals and rates, in a time zone.

This package is pure: no ORM, no models, nothing read from the settings at import time. A
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

Import from this package; its modules are private. :mod:`.rates` holds the rates,
:mod:`.zones` the passage between wall times and instants (DST gaps and folds), :mod:`.cron`
the walks over cron expressions and days, :mod:`.words` the descriptions, and :mod:`.schedule`
:class:`Recurrence`, :func:`build` and the stored form.
"""

from __future__ import annotations

from django_alarms.recurrence.cron import CRON_MACROS as CRON_MACROS
from django_alarms.recurrence.rates import (
    MAX_INTERVAL,
    Daily,
    Days,
    Hours,
    Minutes,
    Rate,
    Weekdays,
    WeekdaysAndSaturday,
)
from django_alarms.recurrence.schedule import (
    MAX_CATCH_UP,
    MISFIRE_POLICIES,
    CatchUp,
    Recurrence,
    build,
)
from django_alarms.recurrence.zones import HORIZON
from django_alarms.recurrence.zones import MAX_TIMEZONE_LENGTH as MAX_TIMEZONE_LENGTH
from django_alarms.recurrence.zones import UTC as UTC

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
