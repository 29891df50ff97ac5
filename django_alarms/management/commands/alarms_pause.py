"""``manage.py alarms_pause``: ``alarms.pause`` for every alarm the options select."""

from __future__ import annotations

from django_alarms import alarms
from django_alarms.management.commands._changes import command

Command = command(
    "pause",
    "paused",
    alarms.pause,
    (
        "Pause the scheduled alarms the options select, through alarms.pause: they are not "
        "delivered until resumed. --dry-run shows what would change."
    ),
)
