"""``manage.py alarms_health``: exit 0 when alarms are being delivered, 1 when not (probes)."""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from django_alarms import clock, selectors
from django_alarms.conf import alarm_settings
from django_alarms.management.commands._options import fraction, positive_int, span, whole
from django_alarms.models import Attempt, Worker
from django_alarms.templatetags.alarms_admin import span as words

#: How many of the last hour's attempts the failure rate is measured on, at most (the latest).
RATE_SAMPLE = 10_000
FAILURE_WINDOW = timedelta(hours=1)


@dataclass
class Health:
    """What the probe found, and why it is unhealthy (``problems`` empty: healthy)."""

    workers_alive: int = 0
    youngest_heartbeat_age_seconds: float | None = None
    oldest_overdue_seconds: float | None = None
    attempts_sampled: int = 0
    failed_rate: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def examine(
    *,
    now: datetime,
    max_overdue: timedelta,
    max_heartbeat_age: timedelta,
    min_workers: int,
    max_failed_rate: float | None,
    sample: int = RATE_SAMPLE,
) -> Health:
    health = Health()
    ages = [
        (now - beat).total_seconds()
        for beat in Worker.objects.values_list("heartbeat_at", flat=True)
    ]
    alive = [age for age in ages if age <= max_heartbeat_age.total_seconds()]
    health.workers_alive = len(alive)
    health.youngest_heartbeat_age_seconds = round(min(ages), 3) if ages else None
    if len(alive) < min_workers:
        limit = words(max_heartbeat_age)
        health.problems.append(
            f"{len(alive)} worker(s) with a heartbeat within {limit}, at least {min_workers} wanted"
        )
    oldest = selectors.oldest_overdue(now=now)
    if oldest is not None:
        late = now - oldest.due_at
        health.oldest_overdue_seconds = round(late.total_seconds(), 3)
        if late > max_overdue:
            health.problems.append(
                f"the oldest overdue alarm is {words(late)} late (at most {words(max_overdue)} "
                f"allowed): {oldest.id} {oldest.handler}"
            )
    if max_failed_rate is not None:
        outcomes = list(
            Attempt.objects.filter(started_at__gte=now - FAILURE_WINDOW)
            .order_by("-started_at")
            .values_list("outcome", flat=True)[:sample]
        )
        health.attempts_sampled = len(outcomes)
        if outcomes:
            failed = sum(1 for outcome in outcomes if outcome in selectors.FAILURES)
            health.failed_rate = round(failed / len(outcomes), 4)
            if health.failed_rate > max_failed_rate:
                health.problems.append(
                    f"{failed:,} of the last {len(outcomes):,} attempts failed "
                    f"({health.failed_rate:.1%}; at most {max_failed_rate:.1%} allowed)"
                )
    return health


def summary(health: Health) -> str:
    """The one line a probe's log shows."""
    if not health.ok:
        return "FAIL: " + "; ".join(health.problems)
    parts = [f"{health.workers_alive} worker(s) alive"]
    if health.oldest_overdue_seconds is None:
        parts.append("nothing overdue")
    else:
        parts.append(f"oldest overdue {health.oldest_overdue_seconds:g} s")
    if health.failed_rate is not None:
        parts.append(f"{health.failed_rate:.1%} of the last hour's attempts failed")
    return "OK: " + ", ".join(parts)


class Command(BaseCommand):
    help = (
        "Check that alarms are being delivered, for a container's or a load balancer's probe: "
        "exit status 0 and a line starting with OK, or 1 and a line starting with FAIL that "
        "says why (too few live workers, an alarm overdue for too long, too many failed "
        "attempts, or a database that cannot be read)."
    )
    requires_system_checks: list[str] = []  # a probe answers fast, and says what it found

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--max-overdue",
            type=span,
            default=timedelta(seconds=60),
            metavar="SPAN",
            help="Fail when a scheduled alarm has been due for longer (default: 60s; units "
            "ms, s, m, h, d; a bare number is seconds).",
        )
        parser.add_argument(
            "--max-heartbeat-age",
            type=span,
            default=None,
            metavar="SPAN",
            help="A worker counts as alive when its last heartbeat is at most this old "
            "(default: three HEARTBEAT_INTERVALs, as in the admin).",
        )
        parser.add_argument(
            "--min-workers",
            type=whole,
            default=1,
            metavar="N",
            help="Fail with fewer live workers (default: 1; 0 checks no worker).",
        )
        parser.add_argument(
            "--max-failed-rate",
            type=fraction,
            default=None,
            metavar="RATE",
            help="Fail when more of the last hour's attempts failed (0.05 or 5%%; measured "
            "on the latest --sample at most; default: not checked).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--sample",
            type=positive_int,
            default=RATE_SAMPLE,
            metavar="N",
            help=f"Attempts the failure rate is measured on (default: {RATE_SAMPLE:,}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        heartbeat_age = options["max_heartbeat_age"] or 3 * alarm_settings.HEARTBEAT_INTERVAL
        try:
            health = examine(
                now=clock.now(),
                max_overdue=options["max_overdue"],
                max_heartbeat_age=heartbeat_age,
                min_workers=options["min_workers"],
                max_failed_rate=options["max_failed_rate"],
                sample=options["sample"],
            )
        except DatabaseError as exc:
            health = Health(problems=[f"cannot read the alarms' database: {exc}".strip()])
        if options["json"]:
            self.stdout.write(json.dumps({"ok": health.ok, **asdict(health)}, indent=2))
        else:
            self.stdout.write(summary(health))
        if not health.ok:
            sys.exit(1)
