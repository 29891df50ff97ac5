"""The real ``run_alarms`` command, in child processes, against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_alarms import alarms
from django_alarms.models import Alarm, Attempt, Worker
from tests.workers import ROOT, database_url, probe_lines, running_workers, start_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]


def succeeded(count: int):
    return lambda: Alarm.objects.filter(state="succeeded").count() >= count


def test_delivers_alarms_loaded_and_alarms_scheduled_while_running(tmp_path):
    log = tmp_path / "probe.log"
    early = [
        alarms.schedule("probe", {"n": n}, delay=timedelta(seconds=1 + n / 10)) for n in range(5)
    ]
    with running_workers(tmp_path, 1, probe_log=log) as workers:
        wait_for(succeeded(5), workers=workers, what="the loaded alarms")
        later = [alarms.schedule("probe", {"n": n}, delay=timedelta(seconds=0.5)) for n in range(5)]
        now_alarm = alarms.schedule("probe", {"now": True})
        wait_for(succeeded(11), workers=workers, what="alarms scheduled while running")
    ids = {str(a.id) for a in [*early, *later, now_alarm]}
    calls = probe_lines(log)
    assert sorted(line[1] for line in calls) == sorted(ids)
    assert Attempt.objects.filter(outcome="ok").count() == 11
    for attempt in Attempt.objects.all():
        assert attempt.worker  # the worker's name is recorded with each attempt
        # Claimed shortly before, but never started before its due time (a correctness
        # property: the tolerance only covers the clock-offset estimate, not speed).
        assert attempt.started_at >= attempt.due_at - timedelta(milliseconds=100)


@pytest.mark.parametrize("count", [2, 4], ids=["2-workers", "4-workers"])
def test_workers_share_a_herd_and_deliver_each_alarm_exactly_once(tmp_path, count):
    log = tmp_path / "probe.log"
    due = timezone.now() + timedelta(seconds=4)
    alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(10_000)])
    with running_workers(tmp_path, count, probe_log=log) as workers:
        wait_for(succeeded(10_000), timeout=240, workers=workers, what="the herd to drain")
    calls = probe_lines(log)
    per_alarm = Counter(line[1] for line in calls)
    assert len(per_alarm) == 10_000
    assert max(per_alarm.values()) == 1, "an alarm was dispatched twice"
    assert Attempt.objects.count() == 10_000
    assert set(Attempt.objects.values_list("outcome", flat=True)) == {"ok"}
    assert not Alarm.objects.exclude(state="succeeded").exists()
    # The work was shared: every worker delivered some of it.
    assert len({line[0] for line in calls}) == count


def test_kill_9_during_a_handler_is_recovered_as_lost_and_delivered_again(tmp_path):
    log = tmp_path / "probe.log"
    started = tmp_path / "started"
    release = tmp_path / "release"
    alarm = alarms.schedule("probe", {"started": str(started), "wait_for": str(release)}, timeout=2)
    victim = start_worker(tmp_path, probe_log=log, name="victim")
    try:
        wait_for(started.exists, workers=[victim], what="the handler to start")
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    alarm.refresh_from_db()
    assert alarm.state == "running"
    release.touch()
    with running_workers(tmp_path, 1, probe_log=log, name="rescuer") as workers:
        wait_for(succeeded(1), timeout=60, workers=workers, what="the rescue")
    outcomes = list(
        Attempt.objects.filter(alarm=alarm).order_by("number").values_list("number", "outcome")
    )
    assert outcomes == [(1, "lost"), (2, "ok")]
    assert len(probe_lines(log)) == 2


def test_sigterm_lets_the_running_attempt_finish_and_exits_0(tmp_path):
    log = tmp_path / "probe.log"
    started = tmp_path / "started"
    alarm = alarms.schedule("probe", {"started": str(started), "sleep": 1.5})
    worker = start_worker(tmp_path, probe_log=log)
    wait_for(started.exists, workers=[worker], what="the handler to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output()
    alarm.refresh_from_db()
    assert alarm.state == "succeeded"
    assert list(Attempt.objects.values_list("outcome", flat=True)) == ["ok"]
    assert not Worker.objects.exists(), "a stopped worker removes its row"


def test_sigterm_releases_claimed_alarms_that_had_not_started(tmp_path):
    started = tmp_path / "started"
    blocker = alarms.schedule("probe", {"started": str(started), "sleep": 1.5})
    waiting = [alarms.schedule("probe", {}) for _ in range(3)]
    worker = start_worker(tmp_path, "--concurrency", "1")
    wait_for(started.exists, workers=[worker], what="the first handler to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output()
    blocker.refresh_from_db()
    assert blocker.state == "succeeded"
    states = Counter(
        Alarm.objects.filter(pk__in=[a.pk for a in waiting]).values_list("state", flat=True)
    )
    # Whatever was not started went back to scheduled with its attempt count undone.
    assert set(states) <= {"scheduled", "succeeded"}
    for alarm in Alarm.objects.filter(pk__in=[a.pk for a in waiting], state="scheduled"):
        assert alarm.attempts == 0


def test_cancelled_armed_alarm_is_not_delivered_and_rescheduled_one_fires_only_at_its_new_time(
    tmp_path,
):
    log = tmp_path / "probe.log"
    # Due 5 s from now: time for the worker to start and load them on a busy machine, before
    # they are claimed; the moved one goes 5 s past the load, later than it was due.
    cancelled = alarms.schedule("probe", {"which": "cancelled"}, delay=timedelta(seconds=5))
    moved = alarms.schedule("probe", {"which": "moved"}, delay=timedelta(seconds=5))
    marker = alarms.schedule("probe", {"which": "marker"}, delay=timedelta(seconds=7))
    with running_workers(tmp_path, 1, probe_log=log, alarms={"LOAD_INTERVAL": 10}) as workers:
        wait_for(lambda: "loaded 3 alarm" in workers[0].output(), workers=workers, what="the load")
        alarms.cancel(cancelled)
        new_time = timezone.now() + timedelta(seconds=5)
        alarms.reschedule(moved, at=new_time)
        wait_for(
            lambda: Alarm.objects.filter(pk=marker.pk, state="succeeded").exists(),
            workers=workers,
            what="the marker",
        )
        wait_for(
            lambda: Alarm.objects.filter(pk=moved.pk, state="succeeded").exists(),
            workers=workers,
            what="the moved alarm",
        )
    assert not Attempt.objects.filter(alarm=cancelled).exists()
    cancelled.refresh_from_db()
    assert cancelled.state == "cancelled"
    (attempt,) = Attempt.objects.filter(alarm=moved)
    assert attempt.started_at >= new_time - timedelta(milliseconds=100)
    assert attempt.due_at == new_time


def test_a_hanging_handler_times_out_is_retried_and_the_worker_goes_on(tmp_path):
    hanging = alarms.schedule("probe", {"sleep": 30}, timeout=0.5, max_attempts=2)
    others = [alarms.schedule("probe", {}) for _ in range(5)]
    with running_workers(tmp_path, 1, "--concurrency", "2") as workers:
        wait_for(
            lambda: Alarm.objects.filter(pk=hanging.pk, state="failed").exists(),
            workers=workers,
            what="the timeouts",
        )
        wait_for(succeeded(5), workers=workers, what="the other alarms")
    assert list(
        Attempt.objects.filter(alarm=hanging).values_list("outcome", flat=True).order_by("number")
    ) == [
        "timeout",
        "timeout",
    ]
    assert Alarm.objects.filter(pk__in=[a.pk for a in others], state="succeeded").count() == 5


def test_failing_and_unknown_handlers_never_stop_the_worker(tmp_path):
    failing = alarms.schedule("probe", {"fail": "boom"}, max_attempts=2)
    unknown = alarms.schedule("probe", {})
    Alarm.objects.filter(pk=unknown.pk).update(handler="not_deployed_yet")
    fine = alarms.schedule("probe", {}, delay=timedelta(seconds=1))
    with running_workers(tmp_path, 1) as workers:
        wait_for(
            lambda: Alarm.objects.filter(pk=failing.pk, state="failed").exists(),
            workers=workers,
            what="the failure",
        )
        wait_for(
            lambda: Alarm.objects.filter(pk=fine.pk, state="succeeded").exists(),
            workers=workers,
            what="the good alarm",
        )
        wait_for(
            lambda: Attempt.objects.filter(alarm=unknown).exists(),
            workers=workers,
            what="the unknown handler's attempt",
        )
    error = Attempt.objects.filter(alarm=unknown).first().error
    assert "not_deployed_yet" in error
    unknown.refresh_from_db()
    assert unknown.state in ("scheduled", "running", "failed")
    assert "RuntimeError: boom" in Attempt.objects.filter(alarm=failing).first().error


def test_once_delivers_what_is_due_and_exits(tmp_path):
    due = [alarms.schedule("probe", {}) for _ in range(3)]
    future = alarms.schedule("probe", {}, delay=timedelta(hours=1))
    worker = start_worker(tmp_path, "--once")
    assert worker.wait(120) == 0, worker.output()
    assert Alarm.objects.filter(pk__in=[a.pk for a in due], state="succeeded").count() == 3
    future.refresh_from_db()
    assert future.state == "scheduled"


def test_handlers_option_delivers_only_those_handlers(tmp_path):
    mine = alarms.schedule("probe", {})
    other = alarms.schedule("send_reminder", {"account": 1})
    worker = start_worker(tmp_path, "--once", "--handlers", "probe")
    assert worker.wait(120) == 0, worker.output()
    mine.refresh_from_db()
    other.refresh_from_db()
    assert (mine.state, other.state) == ("succeeded", "scheduled")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "must be at least 1"),
        (["--concurrency", "many"], "is not a whole number"),
        (["--load-interval", "-1"], "positive number of seconds"),
        (["--executor", "rq"], "invalid choice"),
        (["--handlers", "nope"], "no handler registered as 'nope'"),
        (["--queues", " , "], "give at least one queue name"),
        (["--queues", "default," + "q" * 101], "a queue name has at most 100 characters"),
    ],
    ids=[
        "zero-concurrency",
        "word-concurrency",
        "negative-interval",
        "unknown-executor",
        "unknown-handler",
        "empty-queues",
        "long-queue",
    ],
)
def test_bad_options_are_argument_errors_not_tracebacks(args, message):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_alarms", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url(),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="terminates PostgreSQL backends")
def test_worker_survives_its_database_connections_being_killed(tmp_path):
    log = tmp_path / "probe.log"
    with running_workers(tmp_path, 1, probe_log=log) as workers:
        first = alarms.schedule("probe", {})
        wait_for(succeeded(1), workers=workers, what="the first alarm")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        later = [alarms.schedule("probe", {}, delay=timedelta(seconds=0.5)) for _ in range(5)]
        wait_for(succeeded(6), timeout=90, workers=workers, what="delivery after the outage")
    calls = Counter(line[1] for line in probe_lines(log))
    assert set(calls) == {str(a.id) for a in [first, *later]}
    assert max(calls.values()) == 1


def test_recurring_alarms_fire_each_occurrence_once_without_drift(tmp_path):
    log = tmp_path / "probe.log"
    # Far enough ahead that a slow worker start-up does not make the first occurrences
    # overdue (the misfire policy would then rightly skip them).
    start = timezone.now() + timedelta(seconds=6)
    every = alarms.schedule_recurring(
        "probe", {}, every=timedelta(milliseconds=500), start_at=start, key="t", name="every"
    )
    cron = alarms.schedule_recurring("probe", {}, cron="* * * * * *", key="t", name="cron")
    with running_workers(tmp_path, 1, probe_log=log) as workers:
        wait_for(
            lambda: (
                Attempt.objects.filter(alarm=every).count() >= 6
                and Attempt.objects.filter(alarm=cron).count() >= 3
            ),
            workers=workers,
            what="six occurrences",
        )
    occurrences = list(
        Attempt.objects.filter(alarm=every).order_by("number").values_list("due_at", flat=True)
    )
    # Each occurrence follows the schedule, not the completion time: exact 500 ms steps.
    assert occurrences[:6] == [start + n * timedelta(milliseconds=500) for n in range(6)]
    seconds = list(
        Attempt.objects.filter(alarm=cron).order_by("number").values_list("due_at", flat=True)
    )
    assert all(moment.microsecond == 0 for moment in seconds)
    assert len(set(seconds)) == len(seconds), "an occurrence was delivered twice"
    every.refresh_from_db()
    assert every.state == "scheduled"
