"""The benchmark's Django task: a no-op, like the ``bench_noop`` handler, enqueued with
``Task.enqueue`` through django-alarms' Tasks backend."""

from __future__ import annotations

from django_alarms import _tasks_compat as dt


@dt.task(max_attempts=3)
def bench_noop_task(n: int) -> None:
    return None
