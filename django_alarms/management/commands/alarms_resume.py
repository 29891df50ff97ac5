"""``manage.py alarms_resume``: ``alarms.resume`` for every alarm the options select."""

from __future__ import annotations

from django_alarms import alarms
from django_alarms.management.commands._changes import command

Command = command(
    "resume",
    "resumed",
    alarms.resume,
    (
        "Resume the paused alarms the options select, through alarms.resume (a recurring one at "
        "its next future occurrence). --dry-run shows what would change."
    ),
)
