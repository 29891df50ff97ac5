"""The Celery app of the benchmark's celery scenario: Redis as the broker (``BENCH_CELERY_BROKER``),
JSON only, and the bare task the Celery executor is measured against."""

from __future__ import annotations

import os
import time

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

app = Celery("django_alarms_bench")
app.conf.update(
    broker_url=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/11"),
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.bare_timing", ignore_result=True)
def bare_timing(token: str, sent_at: float) -> None:
    """A bare Celery task (no django-alarms in the way): the same line as ``bench_timing``, with
    the time it was sent in place of a due time."""
    from benchmarks.benchapp.alarms import _write

    started = time.time()
    _write(f"{token} {sent_at:.6f} {started:.6f} {os.getpid()} 1\n")
