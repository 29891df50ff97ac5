"""``manage.py alarms_cancel``: ``alarms.cancel`` for every alarm the options select."""

from __future__ import annotations

from django_alarms import alarms
from django_alarms.management.commands._changes import command

Command = command(
    "cancel",
    "cancelled",
    alarms.cancel,
    (
        "Cancel the alarms the options select (scheduled, failed and paused ones at once; a "
        "running one after its current attempt), through alarms.cancel. --dry-run shows what "
        "would change."
    ),
)
