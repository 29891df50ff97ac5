"""Django tasks for the Tasks backend's tests (the ones Django's own ``tests/tasks/tasks.py``
defines, and a probe like the ``probe`` handler's), run by :class:`AlarmsBackend` in-process
and inside real ``run_alarms`` processes."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from django_alarms import _tasks_compat as dt

task = dt.task


@task()
def noop_task(*args, **kwargs):
    return None


@task
def noop_task_from_bare_decorator(*args, **kwargs):
    return None


@task()
async def noop_task_async(*args, **kwargs):
    return None


@task()
def calculate_meaning_of_life():
    return 42


@task()
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task(max_attempts=1)
def failing_task_value_error():
    raise ValueError("This Task failed due to ValueError")


@task(max_attempts=1)
def failing_task_system_exit():
    raise SystemExit("This Task failed due to SystemExit")


@task(max_attempts=1)
def failing_task_keyboard_interrupt():
    raise KeyboardInterrupt("This Task failed due to KeyboardInterrupt")


@task(max_attempts=1)
def complex_exception():
    raise ValueError(ValueError("This task failed"))


@task(max_attempts=3)
def complex_return_value():
    # Neither JSON nor picklable.
    return lambda: True


@task(max_attempts=3, backoff={"base": 0.05, "jitter": 0})
def fails_twice(marker):
    """Fails on its first two attempts, then returns the attempt number it saw."""
    count = 1
    if os.path.exists(marker):
        with open(marker) as seen:
            count = int(seen.read()) + 1
    with open(marker, "w") as out:
        out.write(str(count))
    if count < 3:
        raise RuntimeError(f"attempt {count} fails")
    return count


@task(takes_context=True)
def get_task_id(context):
    return context.task_result.id


@task(takes_context=True, max_attempts=1)
def test_context(context, attempt):
    assert isinstance(context, dt.TaskContext)
    assert context.attempt == attempt
    return context.attempt


@task(priority=5, queue_name="emails", timeout=7.5)
def timed_probe(log_path):
    """Appends ``pid started_iso`` to ``log_path`` (the worker tests read it)."""
    with open(log_path, "a") as out:
        out.write(f"{os.getpid()} {datetime.now(timezone.utc).isoformat()}\n")


@task(timeout=2)
def waits_for(started, release):
    """Announces that it started (creates ``started``), then waits until ``release`` exists."""
    with open(started, "w") as flag:
        flag.write(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "released"
