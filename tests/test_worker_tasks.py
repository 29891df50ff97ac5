"""Django tasks of :class:`~django_alarms.tasks.AlarmsBackend` under the real ``run_alarms``
command, in child processes: delivered at ``run_after``, retried, rescued from a killed
worker, and kept to the worker's ``--queues``."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from django_alarms import _tasks_compat as dt
from django_alarms.models import Alarm, Attempt
from tests.workerapp import tasks as t
from tests.workers import running_workers, start_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]

Status = dt.TaskResultStatus


def finished(*results):
    def check() -> bool:
        for result in results:
            result.refresh()
        return all(result.is_finished for result in results)

    return check


def test_deferred_tasks_run_at_run_after_never_before(tmp_path):
    log = tmp_path / "tasks.log"
    base = timezone.now()
    results = [
        t.timed_probe.using(run_after=base + timedelta(seconds=1.5 + n / 10)).enqueue(str(log))
        for n in range(5)
    ]
    with running_workers(tmp_path, 1) as workers:
        wait_for(finished(*results), workers=workers, what="the deferred tasks")
    assert {result.status for result in results} == {Status.SUCCESSFUL}
    starts = sorted(
        datetime.fromisoformat(line.split()[1]) for line in log.read_text().split("\n") if line
    )
    assert len(starts) == 5
    for result, started in zip(results, starts, strict=True):
        # Never before its time (the tolerance only covers the clock-offset estimate), as
        # for plain alarms; the attempt row says the same.
        assert started >= result.task.run_after - timedelta(milliseconds=100)
        attempt = Attempt.objects.get(alarm_id=result.id)
        assert attempt.started_at >= attempt.due_at - timedelta(milliseconds=100)
        assert result.worker_ids == [attempt.worker]


def test_a_failing_task_is_retried_by_the_worker_until_it_succeeds(tmp_path):
    result = t.fails_twice.enqueue(str(tmp_path / "count"))
    with running_workers(tmp_path, 1) as workers:
        wait_for(finished(result), workers=workers, what="the retries")
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 3
    assert result.attempts == 3
    assert [error.exception_class_path for error in result.errors] == [
        "builtins.RuntimeError",
        "builtins.RuntimeError",
    ]


def test_a_task_of_a_killed_worker_is_rescued_and_run_again(tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    result = t.waits_for.enqueue(str(started), str(release))
    victim = start_worker(tmp_path, name="victim")
    try:
        wait_for(started.exists, workers=[victim], what="the task to start")
        result.refresh()
        assert result.status == Status.RUNNING
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    release.touch()
    with running_workers(tmp_path, 1, name="rescuer") as workers:
        wait_for(finished(result), timeout=60, workers=workers, what="the rescue")
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == "released"
    assert [error.exception_class_path for error in result.errors] == [
        "django_alarms.exceptions.LostAttempt"
    ]
    assert result.attempts == 2


def test_a_worker_with_queues_runs_only_the_tasks_in_them(tmp_path):
    log = tmp_path / "tasks.log"
    emails = t.timed_probe.enqueue(str(log))  # queue_name="emails"
    default = t.noop_task.enqueue()
    worker = start_worker(tmp_path, "--once", "--queues", "emails")
    assert worker.wait(120) == 0, worker.output()
    assert Alarm.objects.get(pk=emails.id).state == "succeeded"
    assert Alarm.objects.get(pk=default.id).state == "scheduled"
