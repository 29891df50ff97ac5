"""Schedule a few demo alarms due in the next seconds, so that run_alarms shows them firing."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from django_alarms import alarms


def _python() -> str:
    """How to call this Python from here: ``.venv/bin/python`` as the README does, when the
    interpreter lives under the current directory."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return "python"


class Command(BaseCommand):
    help = "Schedule demo alarms due within the next seconds (for the README's first command)."

    def handle(self, *args: Any, **options: Any) -> None:
        with alarms.batch():
            for n, seconds in enumerate((1, 2, 3, 5, 8), start=1):
                alarms.schedule("send_reminder", {"account": n}, delay=timedelta(seconds=seconds))
            alarms.schedule("flaky_partner_call", {"order": 42}, delay=timedelta(seconds=2))
            alarms.schedule("poll_export", {"export": "monthly.csv"}, delay=timedelta(seconds=4))
            alarms.schedule_recurring(
                "heartbeat_report",
                every=timedelta(seconds=5),
                key="demo",
                name="heartbeat",
                if_exists="replace",
            )
            alarms.schedule_recurring(
                "heartbeat_report",
                rate=alarms.Weekdays(17, 0),
                timezone="Europe/Paris",
                key="demo",
                name="weekday-report",
                if_exists="replace",
            )
        tasks = ""
        if getattr(settings, "TASKS", None):
            # A standard Django @task, deferred with run_after: delivered at that time.
            from testproject.example.tasks import send_digest

            now = timezone.now()
            send_digest.using(run_after=now + timedelta(seconds=6)).enqueue(7, now.isoformat())
            tasks = " and a Django task (send_digest, run_after 6 s)"
        self.stdout.write(
            self.style.SUCCESS(
                "Scheduled 7 demo alarms due in the next 8 seconds and 2 recurring ones "
                f"(every 5 s, and weekdays at 17:00 Paris time){tasks}. Now run: "
                f"{_python()} manage.py run_alarms"
            )
        )
