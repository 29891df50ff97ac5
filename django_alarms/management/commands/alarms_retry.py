"""``manage.py alarms_retry``: ``alarms.retry`` for every alarm the options select."""

from __future__ import annotations

from django_alarms import alarms
from django_alarms.management.commands._changes import command

Command = command(
    "retry",
    "retried",
    alarms.retry,
    (
        "Retry the failed and cancelled alarms the options select, with a fresh budget of "
        "attempts, through alarms.retry. --dry-run shows what would change."
    ),
)
