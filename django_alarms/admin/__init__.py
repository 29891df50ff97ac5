"""The Django admin of django-alarms: read-only history, actions through the service layer.

Nothing here writes an alarm: every action fetches rows and calls :mod:`django_alarms.alarms`
(retry, run_now, cancel, reschedule), checks its own permission server-side (``retry_alarm``,
``run_alarm``, ``cancel_alarm``, ``reschedule_alarm``), skips the rows it does not apply to and
says why, and writes a ``LogEntry`` per changed alarm. Alarms, attempts and workers can be
looked at but never added, edited or deleted here: the history is evidence.

The lists stay fast on millions of rows: no per-row queries, counts that stop at a cap (see
:class:`CappedPaginator`), filters that list handlers from the registry instead of the table,
and a date hierarchy answered by index probes.

The package: ``base`` (the read-only base class, the checked change list, the capped paginator,
the checks of query parameters), ``filters``, ``dates`` (the alarm list's date hierarchy),
``operations`` (what the actions and buttons do), ``alarm`` (the alarm admin: options, URLs,
views, permissions, actions), ``columns`` and ``details`` (its list's columns and the fields of
an alarm's page), ``history`` (attempts, workers, the attempts inline), ``pages`` (the overview
and the reschedule form), ``charts`` (the overview's geometry) and ``lateness`` (an attempt's
lateness, and its percentiles per handler from a bounded read).
"""

from django_alarms import selectors
from django_alarms.admin.alarm import AlarmAdmin
from django_alarms.admin.base import CappedPaginator, CheckedChangeList, ReadOnlyAdmin
from django_alarms.admin.filters import (
    AlarmFilter,
    DueWindowFilter,
    HandlerFilter,
    KindFilter,
    QueueFilter,
)
from django_alarms.admin.history import AttemptAdmin, AttemptInline, WorkerAdmin

__all__ = [
    "AlarmAdmin",
    "AlarmFilter",
    "AttemptAdmin",
    "AttemptInline",
    "CappedPaginator",
    "CheckedChangeList",
    "DueWindowFilter",
    "HandlerFilter",
    "KindFilter",
    "QueueFilter",
    "ReadOnlyAdmin",
    "WorkerAdmin",
    "selectors",
]
