"""``manage.py alarms_health``: thresholds, its one line, JSON and exit codes."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError

from django_alarms import clock, selectors
from django_alarms.models import Worker
from django_alarms.testing import AlarmFactory, AttemptFactory

pytestmark = pytest.mark.django_db


def health(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("alarms_health", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


def worker(age: timedelta, name: str = "w") -> Worker:
    now = clock.now()
    return Worker.objects.create(
        name=name, hostname="h", pid=1, executor="inline", started_at=now, heartbeat_at=now - age
    )


def test_healthy_with_a_live_worker_and_nothing_late():
    worker(timedelta(seconds=2))
    AlarmFactory(handler="tests.ok", due_at=clock.now() + timedelta(minutes=5))
    code, line = health()
    assert code == 0
    assert line.startswith("OK: 1 worker(s) alive, nothing overdue")


def test_no_live_worker_fails_and_says_so():
    worker(timedelta(minutes=10))
    code, line = health()
    assert code == 1
    assert line.startswith("FAIL: 0 worker(s) with a heartbeat within 30 s, at least 1 wanted")
    assert health("--max-heartbeat-age", "1h")[0] == 0
    assert health("--min-workers", "0")[0] == 0
    assert health("--min-workers", "2", "--max-heartbeat-age", "1h")[0] == 1


def test_an_alarm_overdue_too_long_fails_and_names_it():
    worker(timedelta(seconds=1))
    late = AlarmFactory(handler="tests.ok", due_at=clock.now() - timedelta(minutes=3))
    code, line = health()
    assert code == 1
    assert "the oldest overdue alarm is 3 min late (at most 1 min allowed)" in line
    assert str(late.id) in line
    code, line = health("--max-overdue", "5m")
    assert code == 0
    assert "oldest overdue 18" in line


def test_the_failed_rate_is_checked_only_when_asked():
    worker(timedelta(seconds=1))
    alarm = AlarmFactory(handler="tests.ok")
    now = clock.now()
    for n, outcome in enumerate(["error", "ok", "ok", "timeout"]):
        AttemptFactory(alarm=alarm, outcome=outcome, started_at=now - timedelta(minutes=n + 1))
    AttemptFactory(alarm=alarm, outcome="error", started_at=now - timedelta(hours=2))
    assert health()[0] == 0
    code, line = health("--max-failed-rate", "25%")
    assert code == 1
    assert "2 of the last 4 attempts failed (50.0%; at most 25.0% allowed)" in line
    assert health("--max-failed-rate", "0.5")[0] == 0
    # Measured on the latest attempts only: the two latest are one error and one success.
    code, line = health("--max-failed-rate", "0.4", "--sample", "2")
    assert code == 1
    assert "1 of the last 2 attempts failed" in line


def test_json_has_the_figures_and_the_problems():
    worker(timedelta(minutes=10))
    code, text = health("--json")
    report = json.loads(text)
    assert code == 1
    assert report["ok"] is False
    assert report["workers_alive"] == 0
    assert report["youngest_heartbeat_age_seconds"] >= 600
    assert len(report["problems"]) == 1


def test_an_unreadable_database_is_a_fail_line_and_exit_1(monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("server closed the connection")

    worker(timedelta(seconds=1))
    monkeypatch.setattr(selectors, "oldest_overdue", broken)
    code, line = health()
    assert code == 1
    assert line.startswith("FAIL: cannot read the alarms' database: server closed the connection")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-overdue", "soon"], "is not a length of time"),
        (["--max-failed-rate", "150%"], "must be from 0 to 1"),
        (["--min-workers", "-1"], "must not be negative"),
        (["--max-heartbeat-age", "99999d"], "longer than ten years"),
    ],
)
def test_bad_thresholds_are_usage_errors(args, message):
    with pytest.raises(CommandError, match=message):
        health(*args)
