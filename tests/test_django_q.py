"""The django-q2 executor, end to end: a real ``manage.py qcluster`` on Redis runs the handlers
and a real ``run_alarms --executor django_q`` fires the alarms, on the test database.

These tests need django-q2 and Redis (127.0.0.1:6379, or ``ALARMS_Q_REDIS``): without them
they fail, they are never skipped. Each test gets a queue of its own, so parallel runs do not
take each other's tasks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from django_alarms import alarms
from django_alarms.models import Alarm, Attempt, Worker
from tests.workers import (
    FAST,
    ROOT,
    WorkerProcess,
    database_url,
    probe_lines,
    terminate_group,
    wait_for,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.subprocess,
    pytest.mark.django_q,
]

REDIS_URL = os.environ.get("ALARMS_Q_REDIS", "redis://127.0.0.1:6379/13")
CLUSTER_WORKERS = 4


@pytest.fixture(scope="module")
def redis_client() -> Any:
    """Redis, or a failure that says what is missing (never a skip)."""
    if importlib.util.find_spec("django_q") is None:
        pytest.fail('django-q2 is not installed: pip install "django-alarms[django-q]" redis')
    try:
        import redis
    except ImportError:
        pytest.fail("the redis client is not installed: pip install redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def q_tables(django_db_setup: None, redis_client: Any) -> None:
    """django-q2's own tables in the test database (the cluster saves failed tasks there)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "django_q", "--noinput"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.qsettings",
            "DATABASE_URL": database_url(),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class Queue:
    """One test's queue: the environment its cluster and worker share, and the probe's log."""

    name: str
    env: dict[str, str]
    probe_log: Path
    tmp_path: Path
    redis: Any
    processes: list[WorkerProcess] = field(default_factory=list)

    def length(self) -> int:
        return int(self.redis.llen(f"django_q:{self.name}:q"))

    def clean(self) -> None:
        keys = list(self.redis.scan_iter(match=f"django_q:{self.name}:*"))
        if keys:
            self.redis.delete(*keys)


@pytest.fixture
def queue(tmp_path: Path, q_tables: None, redis_client: Any) -> Iterator[Queue]:
    name = f"django-alarms-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    probe_log = tmp_path / "probe.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.qsettings",
        "DATABASE_URL": database_url(),
        "ALARMS_JSON": json.dumps(FAST),
        "ALARMS_Q_NAME": name,
        "ALARMS_Q_REDIS": REDIS_URL,
        "ALARMS_Q_WORKERS": str(CLUSTER_WORKERS),
        "ALARMS_PROBE_LOG": str(probe_log),
        "PYTHONUNBUFFERED": "1",
    }
    q = Queue(name, env, probe_log, tmp_path, redis_client)
    q.clean()
    try:
        yield q
    finally:
        for process in reversed(q.processes):
            terminate_group(process)
        q.clean()


def _spawn(q: Queue, name: str, *args: str) -> WorkerProcess:
    log = q.tmp_path / f"{name}-{time.monotonic_ns()}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=q.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            # A group of its own, so that the cluster's children can be killed with it.
            start_new_session=True,
        )
    worker = WorkerProcess(process, log)
    q.processes.append(worker)
    return worker


def start_cluster(q: Queue) -> WorkerProcess:
    cluster = _spawn(q, "qcluster", "qcluster")
    wait_for(
        lambda: re.search(r"Q Cluster .* running", cluster.output()),
        timeout=60,
        workers=[cluster],
        what="the django-q cluster to start",
    )
    return cluster


def cluster_pids(cluster: WorkerProcess) -> set[int]:
    """Pids of the cluster's worker processes (replacements included)."""
    return {int(pid) for pid in re.findall(r"ready for work at (\d+)", cluster.output())}


def start_worker(q: Queue, *args: str) -> WorkerProcess:
    worker = _spawn(q, "worker", "run_alarms", "--executor", "django_q", *args)
    wait_for(
        lambda: Worker.objects.filter(pid=worker.pid).exists(),
        timeout=60,
        workers=[worker],
        what="the worker to start",
    )
    return worker


@pytest.fixture
def cluster(queue: Queue) -> WorkerProcess:
    return start_cluster(queue)


@contextmanager
def running_worker(q: Queue, *args: str) -> Iterator[WorkerProcess]:
    worker = start_worker(q, *args)
    yield worker
    assert terminate_group(worker) == 0, worker.output()[-4000:]


def succeeded(count: int) -> Any:
    return lambda: Alarm.objects.filter(state="succeeded").count() >= count


def test_alarms_are_delivered_once_each_by_the_cluster(queue, cluster):
    before = [alarms.schedule("probe", {"n": n}) for n in range(2)]
    with running_worker(queue) as worker:
        now = [alarms.schedule("probe", {"now": n}) for n in range(2)]
        later = [
            alarms.schedule("probe", {"later": n}, delay=timedelta(seconds=1 + n / 2))
            for n in range(3)
        ]
        wait_for(succeeded(7), workers=[worker, cluster], what="the alarms")
    ids = sorted(str(alarm.id) for alarm in [*before, *now, *later])
    calls = probe_lines(queue.probe_log)
    assert sorted(line[1] for line in calls) == ids, "each alarm is delivered exactly once"
    pids = {int(line[0]) for line in calls}
    assert worker.pid not in pids
    assert pids <= cluster_pids(cluster), "handlers run in the cluster's worker processes"
    assert Attempt.objects.count() == 7
    for attempt in Attempt.objects.all():
        assert attempt.outcome == "ok"
        assert attempt.worker.endswith("(django-q)")
        # Handed off at the due time, never before it (the tolerance covers the worker's
        # estimate of the database's clock, not speed).
        assert attempt.started_at >= attempt.due_at - timedelta(milliseconds=100)


def test_a_failing_handler_is_retried_by_the_alarms_policy_and_fails(queue, cluster):
    failing = alarms.schedule("probe", {"fail": "boom"}, max_attempts=3)
    with running_worker(queue) as worker:
        wait_for(
            lambda: Alarm.objects.filter(pk=failing.pk, state="failed").exists(),
            workers=[worker, cluster],
            what="the attempts of the failing alarm",
        )
    attempts = list(Attempt.objects.filter(alarm=failing).order_by("number"))
    assert [(a.number, a.outcome) for a in attempts] == [(1, "error"), (2, "error"), (3, "error")]
    for attempt in attempts:
        assert attempt.error == "RuntimeError: boom"
        assert "RuntimeError: boom" in attempt.traceback
        assert attempt.worker.endswith("(django-q)")
    failing.refresh_from_db()
    assert "boom" in failing.last_error
    calls = probe_lines(queue.probe_log)
    assert len(calls) == 3
    assert {int(line[0]) for line in calls} <= cluster_pids(cluster)


def test_a_hanging_handler_is_stopped_by_django_q_recorded_as_timeout_and_retried(queue, cluster):
    hanging = alarms.schedule("probe", {"sleep": 30}, timeout=1, max_attempts=2)
    with running_worker(queue) as worker:
        wait_for(
            lambda: Alarm.objects.filter(pk=hanging.pk, state="failed").exists(),
            workers=[worker, cluster],
            what="the timeouts",
        )
        # The cluster replaced the process that timed out and goes on.
        after = alarms.schedule("probe", {})
        wait_for(
            lambda: Alarm.objects.filter(pk=after.pk, state="succeeded").exists(),
            workers=[worker, cluster],
            what="an alarm after the timeouts",
        )
    attempts = list(Attempt.objects.filter(alarm=hanging).order_by("number"))
    assert [(a.number, a.outcome) for a in attempts] == [(1, "timeout"), (2, "timeout")]
    for attempt in attempts:
        assert "1 s timeout" in attempt.error
        # Recorded in the cluster as soon as django-q stopped the handler, not by the worker's
        # deadline.
        assert attempt.worker.endswith("(django-q)")
    assert len(probe_lines(queue.probe_log)) == 3


def test_a_herd_of_1000_alarms_is_delivered_exactly_once(queue, cluster):
    due = timezone.now() + timedelta(seconds=3)
    alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(1000)])
    with running_worker(queue, "--concurrency", str(2 * CLUSTER_WORKERS)) as worker:
        wait_for(succeeded(1000), timeout=300, workers=[worker, cluster], what="the herd")
    calls = probe_lines(queue.probe_log)
    per_alarm = Counter(line[1] for line in calls)
    assert len(per_alarm) == 1000
    assert max(per_alarm.values()) == 1, "an alarm was delivered twice"
    assert Attempt.objects.count() == 1000
    assert set(Attempt.objects.values_list("outcome", flat=True)) == {"ok"}
    assert not Alarm.objects.exclude(state="succeeded").exists()
    pids = {int(line[0]) for line in calls}
    assert pids <= cluster_pids(cluster)
    assert len(pids) > 1, "the cluster's workers shared the herd"


def test_recurring_alarm_occurrences_are_delivered_through_the_cluster(queue, cluster):
    ticking = alarms.schedule_recurring("probe", every=timedelta(seconds=1), key="tick")
    with running_worker(queue) as worker:
        wait_for(
            lambda: Attempt.objects.filter(alarm=ticking, outcome="ok").count() >= 3,
            workers=[worker, cluster],
            what="three occurrences",
        )
        alarms.cancel(ticking)
    dues = list(
        Attempt.objects.filter(alarm=ticking).order_by("number").values_list("due_at", flat=True)
    )
    # One attempt per occurrence, each for the next occurrence (no drift, none repeated).
    assert len(dues) >= 3
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(dues))


def test_without_a_cluster_the_worker_records_a_timeout_and_a_late_task_runs_nothing(queue):
    alarm = alarms.schedule("probe", {}, timeout=1, max_attempts=1)
    with running_worker(queue) as worker:
        wait_for(
            lambda: Alarm.objects.filter(pk=alarm.pk, state="failed").exists(),
            workers=[worker],
            what="the worker to give up on the attempt",
        )
        name = Worker.objects.get(pid=worker.pid).name
    (attempt,) = Attempt.objects.filter(alarm=alarm)
    assert attempt.outcome == "timeout"
    assert "did not record the attempt" in attempt.error
    assert attempt.worker == name
    assert queue.length() == 1, "the task is still in the broker"
    cluster = start_cluster(queue)
    wait_for(
        lambda: "no longer held" in cluster.output(),
        workers=[cluster],
        what="the cluster to take the late task",
    )
    assert probe_lines(queue.probe_log) == [], "a task whose claim is gone runs nothing"
    assert Attempt.objects.filter(alarm=alarm).count() == 1


def test_sigterm_waits_for_attempts_in_the_cluster_and_releases_the_others(queue, cluster):
    started = queue.tmp_path / "started"
    blocker = alarms.schedule("probe", {"started": str(started), "sleep": 1.5})
    worker = start_worker(queue, "--concurrency", "1")
    wait_for(started.exists, workers=[worker, cluster], what="the first handler to start")
    waiting = [alarms.schedule("probe", {}) for _ in range(3)]
    wait_for(
        lambda: Alarm.objects.filter(pk__in=[a.pk for a in waiting], state="running").exists(),
        workers=[worker, cluster],
        what="claims waiting for a slot",
    )
    assert terminate_group(worker) == 0, worker.output()
    blocker.refresh_from_db()
    assert blocker.state == "succeeded"
    assert list(Attempt.objects.filter(alarm=blocker).values_list("outcome", flat=True)) == ["ok"]
    # What was claimed but never handed to the cluster went back, its attempt count undone.
    for alarm in Alarm.objects.filter(pk__in=[a.pk for a in waiting]):
        assert alarm.state in ("scheduled", "succeeded")
        if alarm.state == "scheduled":
            assert alarm.attempts == 0
    assert not Worker.objects.exists()
