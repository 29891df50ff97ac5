"""``manage.py bench_bare_q N``: enqueue N bare django-q2 tasks at once, through one broker
connection, each carrying the time it was sent (the django_q scenario's baseline)."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Enqueue N no-op django-q2 tasks as fast as one process can (benchmark baseline)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("count", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        from django_q.brokers import get_broker
        from django_q.tasks import async_task

        broker = get_broker()
        for n in range(options["count"]):
            async_task(
                "benchmarks.benchapp.alarms.bare_timing",
                f"bare-{n}",
                time.time(),
                ack_failure=True,
                broker=broker,
            )
        self.stdout.write("sent\n")
