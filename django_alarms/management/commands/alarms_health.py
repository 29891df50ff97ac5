"""``manage.py alarms_health``: exit 0 when alarms are being delivered, 1 when not (probes)."""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from django.db import DatabaseError

from django_alarms import clock
from django_alarms.conf import alarm_settings
from django_alarms.health import RATE_SAMPLE, Health, examine, summary
from django_alarms.management.commands._options import (
    AlarmsCommand,
    fraction,
    positive_int,
    span,
    whole,
)


class Command(AlarmsCommand):
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
