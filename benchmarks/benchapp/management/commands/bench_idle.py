"""``manage.py bench_idle``: a bare Django process (same settings, apps and database connection as
a worker, no worker), the baseline of the worker's memory figures. Sleeps until SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Connect to the database, say 'ready' and sleep until SIGTERM (benchmark baseline)."

    def handle(self, *args: Any, **options: Any) -> None:
        connection.ensure_connection()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        done.wait(600)
