"""The Celery executor, end to end: real ``celery worker`` processes run the handlers and a real
``run_alarms --executor celery`` fires the alarms, on the test database, with Redis and with
RabbitMQ as the broker.

These tests need Celery, Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672, guest/guest):
without them they fail, they are never skipped. Each test gets a queue of its own.
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
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from django_alarms import alarms
from django_alarms.models import Alarm, Attempt, Worker
from tests.workers import (
    FAST,
    ROOT,
    WorkerProcess,
    database_url,
    kill_group,
    probe_lines,
    terminate_group,
    wait_for,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.subprocess,
    pytest.mark.celery,
]

BROKERS = {
    "redis": os.environ.get("ALARMS_CELERY_REDIS", "redis://127.0.0.1:6379/12"),
    "rabbitmq": os.environ.get("ALARMS_CELERY_AMQP", "amqp://guest:guest@127.0.0.1:5672//"),
}
CELERY_PROCESSES = 2


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    """The broker's URL, or a failure that says what is missing (never a skip)."""
    if importlib.util.find_spec("celery") is None:
        pytest.fail('Celery is not installed: pip install "django-alarms[celery]"')
    from kombu import Connection

    url = BROKERS[request.param]
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(f"the {request.param} broker is not reachable at {url}: {exc}")
    return url


@dataclass
class Queue:
    """One test's queue: the environment its Celery workers and run_alarms share."""

    name: str
    broker: str
    env: dict[str, str]
    probe_log: Path
    tmp_path: Path
    processes: list[WorkerProcess] = field(default_factory=list)

    def length(self) -> int:
        from kombu import Connection

        with Connection(self.broker) as connection:
            try:
                return int(connection.default_channel.queue_declare(self.name, passive=True)[1])
            except Exception:  # not declared yet: nothing was sent
                return 0

    def delete(self) -> None:
        from kombu import Connection

        with Connection(self.broker) as connection:
            try:
                connection.default_channel.queue_delete(self.name)
            except Exception:
                pass


@pytest.fixture
def queue(tmp_path: Path, broker: str, django_db_setup: None) -> Iterator[Queue]:
    name = f"django-alarms-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    probe_log = tmp_path / "probe.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.celerysettings",
        "DATABASE_URL": database_url(),
        "ALARMS_JSON": json.dumps(FAST),
        "ALARMS_CELERY_BROKER": broker,
        "ALARMS_CELERY_QUEUE": name,
        "ALARMS_PROBE_LOG": str(probe_log),
        "PYTHONUNBUFFERED": "1",
    }
    q = Queue(name, broker, env, probe_log, tmp_path)
    try:
        yield q
    finally:
        for process in reversed(q.processes):
            terminate_group(process)
        q.delete()


def _spawn(q: Queue, name: str, argv: list[str], **env: str) -> WorkerProcess:
    log = q.tmp_path / f"{name}-{time.monotonic_ns()}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**q.env, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: its pool's children die with it
        )
    worker = WorkerProcess(process, log)
    q.processes.append(worker)
    return worker


def start_celery(q: Queue) -> WorkerProcess:
    celery = _spawn(
        q,
        "celery",
        [
            sys.executable, "-m", "celery", "-A", "tests.celeryapp", "worker",
            "--queues", q.name, "--concurrency", str(CELERY_PROCESSES), "--pool", "prefork",
            "--hostname", f"{q.name}-{time.monotonic_ns()}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
    )  # fmt: skip
    wait_for(
        lambda: re.search(r"@\S+ ready\.", celery.output()),
        timeout=60,
        workers=[celery],
        what="the Celery worker to start",
    )
    return celery


def start_worker(q: Queue, *args: str, **env: str) -> WorkerProcess:
    worker = _spawn(
        q,
        "worker",
        [sys.executable, str(ROOT / "manage.py"), "run_alarms", "--executor", "celery", *args],
        **env,
    )
    wait_for(
        lambda: Worker.objects.filter(pid=worker.pid).exists(),
        timeout=60,
        workers=[worker],
        what="the worker to start",
    )
    return worker


def ended(alarm: Alarm, state: str) -> Any:
    return lambda: Alarm.objects.filter(pk=alarm.pk, state=state).exists()


def pool_pids(celery: WorkerProcess) -> set[int]:
    """The pids the probe handler can have run in: the Celery worker's pool processes."""
    import psutil

    try:
        return {child.pid for child in psutil.Process(celery.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def test_alarms_are_delivered_once_each_by_celery_workers(queue):
    celery = start_celery(queue)
    pool = pool_pids(celery)
    worker = start_worker(queue, "--concurrency", "4")
    due = [alarms.schedule("probe", {"n": n}, delay=timedelta(seconds=n / 4)) for n in range(8)]
    herd = alarms.schedule_many([alarms.Spec("probe", {}) for _ in range(40)])
    wait_for(
        lambda: Alarm.objects.filter(state="succeeded").count() == 48,
        timeout=120,
        workers=[worker, celery],
        what="the alarms",
    )
    assert terminate_group(worker) == 0, worker.output()[-4000:]
    calls = probe_lines(queue.probe_log)
    per_alarm = Counter(line[1] for line in calls)
    assert sorted(per_alarm) == sorted(str(a.id) for a in [*due, *herd])
    assert max(per_alarm.values()) == 1, "an alarm was delivered twice"
    assert {int(line[0]) for line in calls} <= pool, "handlers run in Celery's pool processes"
    for attempt in Attempt.objects.all():
        assert attempt.outcome == "ok"
        assert attempt.worker.endswith("(celery)")
        # Sent at the due time, never before it.
        assert attempt.started_at >= attempt.due_at - timedelta(milliseconds=100)


def test_a_failing_handler_is_retried_by_the_alarms_policy_and_fails(queue):
    celery = start_celery(queue)
    failing = alarms.schedule("probe", {"fail": "boom"}, max_attempts=3)
    worker = start_worker(queue)
    wait_for(ended(failing, "failed"), workers=[worker, celery], what="three failed attempts")
    attempts = list(Attempt.objects.filter(alarm=failing).order_by("number"))
    assert [(a.number, a.outcome) for a in attempts] == [(1, "error"), (2, "error"), (3, "error")]
    for attempt in attempts:
        assert attempt.error == "RuntimeError: boom"
        assert "RuntimeError: boom" in attempt.traceback
        assert attempt.worker.endswith("(celery)")
    assert len(probe_lines(queue.probe_log)) == 3


def test_a_hanging_handler_is_stopped_by_celerys_time_limit_recorded_as_timeout(queue):
    celery = start_celery(queue)
    hanging = alarms.schedule("probe", {"sleep": 30}, timeout=1, max_attempts=2)
    worker = start_worker(queue)
    wait_for(ended(hanging, "failed"), workers=[worker, celery], what="the timeouts")
    after = alarms.schedule("probe", {})
    wait_for(ended(after, "succeeded"), workers=[worker, celery], what="an alarm after them")
    attempts = list(Attempt.objects.filter(alarm=hanging).order_by("number"))
    assert [(a.number, a.outcome) for a in attempts] == [(1, "timeout"), (2, "timeout")]
    for attempt in attempts:
        assert "1 s timeout" in attempt.error
        # Recorded in the Celery worker when the soft time limit stopped the handler.
        assert attempt.worker.endswith("(celery)")


def test_a_killed_celery_worker_is_recovered_through_the_lease(queue):
    """kill -9 of the Celery worker while the handler runs, and of the run_alarms worker that
    held the claim: the message is gone (acknowledged on receipt), nobody renews the lease, and
    a new worker's rescue sweep records the attempt as lost and delivers it again."""
    started, release = queue.tmp_path / "started", queue.tmp_path / "release"
    celery = start_celery(queue)
    alarm = alarms.schedule(
        "probe", {"started": str(started), "wait_for": str(release)}, timeout=5, max_attempts=3
    )
    worker = start_worker(queue, ALARMS_CELERY_QUEUE_WAIT="2")
    wait_for(started.exists, workers=[worker, celery], what="the handler to start")
    kill_group(celery)
    kill_group(worker)
    started.unlink()
    release.touch()  # the next attempt returns at once
    assert Alarm.objects.get(pk=alarm.pk).state == "running"
    replacement = start_worker(queue)
    celery = start_celery(queue)
    wait_for(ended(alarm, "succeeded"), workers=[replacement, celery], what="the retry")
    outcomes = list(
        Attempt.objects.filter(alarm=alarm).order_by("number").values_list("outcome", flat=True)
    )
    assert outcomes == ["lost", "ok"]
    assert len(probe_lines(queue.probe_log)) == 2


def test_a_task_celery_never_ran_is_recorded_by_the_worker_and_never_runs_later(queue):
    """No Celery worker: the run_alarms worker records a timeout at its deadline (queue wait,
    timeout and margins); the task expired in the broker meanwhile, and a Celery worker that
    starts later never runs it."""
    alarm = alarms.schedule("probe", {}, timeout=1, max_attempts=1)
    worker = start_worker(queue, ALARMS_CELERY_QUEUE_WAIT="2")
    wait_for(ended(alarm, "failed"), timeout=90, workers=[worker], what="the worker's timeout")
    (attempt,) = Attempt.objects.filter(alarm=alarm)
    assert attempt.outcome == "timeout"
    assert "did not record the attempt" in attempt.error
    assert attempt.worker == Worker.objects.get(pid=worker.pid).name
    # Expired: RabbitMQ drops it itself (its per-message TTL), Redis keeps it for the Celery
    # worker to discard.
    assert queue.length() in (0, 1)
    celery = start_celery(queue)
    wait_for(lambda: queue.length() == 0, workers=[celery], what="Celery to take the late task")
    time.sleep(1)  # what it would run, it would have started by now (this bounds nothing)
    assert probe_lines(queue.probe_log) == [], "an expired task runs nothing"
    assert Attempt.objects.filter(alarm=alarm).count() == 1
