"""``manage.py alarms_status``: its text, its JSON, its errors."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError

from django_alarms import clock, selectors
from django_alarms.models import Worker
from django_alarms.testing import AlarmFactory, AttemptFactory
from django_alarms.types import State

pytestmark = pytest.mark.django_db


def status(*args: str) -> str:
    out = io.StringIO()
    call_command("alarms_status", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def site():
    """A site with alarms in several states, one worker alive and one dead, one failure."""
    now = clock.now()
    overdue = AlarmFactory(handler="tests.ok", due_at=now - timedelta(minutes=7))
    soon = AlarmFactory(handler="probe", due_at=now + timedelta(seconds=30))
    later = AlarmFactory(handler="tests.ok", due_at=now + timedelta(hours=2))
    AlarmFactory(handler="probe", state=State.PAUSED, due_at=now + timedelta(hours=1))
    failed = AlarmFactory(handler="tests.boom", failed=True)
    AttemptFactory(
        alarm=failed,
        handler="tests.boom",
        outcome="error",
        error="RuntimeError: partner down\nmore",
        started_at=now - timedelta(minutes=10),
    )
    AttemptFactory(
        alarm=failed, handler="tests.boom", outcome="error", started_at=now - timedelta(hours=3)
    )
    alive = Worker.objects.create(
        name="w-alive",
        hostname="h",
        pid=1,
        executor="inline",
        concurrency=8,
        queues=["emails"],
        started_at=now - timedelta(hours=1),
        heartbeat_at=now - timedelta(seconds=4),
        in_flight=1,
    )
    AlarmFactory(
        handler="probe",
        state=State.RUNNING,
        claimed_by=alive.id,
        due_at=now - timedelta(seconds=1),
        lease_until=now + timedelta(minutes=5),
    )
    Worker.objects.create(
        name="w-dead",
        hostname="h",
        pid=2,
        executor="django_q",
        started_at=now - timedelta(days=1),
        heartbeat_at=now - timedelta(hours=2),
    )
    return {"overdue": overdue, "soon": soon, "later": later, "now": now}


def test_json_reports_states_overdue_next_handlers_workers_and_failures(site):
    report = json.loads(status("--json"))
    assert report["states"]["scheduled"] == {"count": 3, "capped": False}
    assert report["states"]["running"]["count"] == 1
    assert report["states"]["paused"]["count"] == 1
    assert report["states"]["failed"]["count"] == 1
    assert report["overdue"]["count"] == 1
    assert report["overdue"]["oldest"]["id"] == str(site["overdue"].id)
    assert 7 * 60 - 5 < report["overdue"]["oldest"]["age_seconds"] < 7 * 60 + 60
    assert [item["id"] for item in report["next_due"]] == [
        str(site["soon"].id),
        str(site["later"].id),
    ]
    assert report["handlers"] == {
        "probe": {"paused": 1, "running": 1, "scheduled": 1},
        "tests.ok": {"scheduled": 2},
    }
    by_name = {worker["name"]: worker for worker in report["workers"]}
    assert by_name["w-alive"]["alive"] is True
    assert by_name["w-alive"]["held"] == 1
    assert by_name["w-alive"]["queues"] == ["emails"]
    assert by_name["w-dead"]["alive"] is False
    assert by_name["w-dead"]["heartbeat_age_seconds"] > 7000
    # Only the failure within the last hour is counted.
    (failure,) = report["failures_last_hour"]
    assert failure["handler"] == "tests.boom"
    assert failure["failures"] == 1
    assert failure["last_error"].startswith("RuntimeError: partner down")


def test_text_says_the_same_for_a_person(site):
    text = status()
    assert "scheduled 3   running 1" in text
    assert f"Overdue: 1; the oldest is 7 min late: {site['overdue'].id} tests.ok" in text
    assert str(site["soon"].id) in text
    assert "Workers: 1 alive, 1 dead" in text
    assert "w-alive  inline x8" in text
    assert "holds 1, 1 in flight" in text
    assert "handlers: all  queues: emails" in text
    assert "tests.boom: 1 (last: RuntimeError: partner down)" in text


def test_an_empty_site_reads_plainly():
    text = status()
    assert "Overdue: none" in text
    assert "Next due: nothing scheduled" in text
    assert "Workers: 0 alive, 0 dead" in text
    assert "Failures in the last hour: none" in text


def test_counts_stop_at_the_cap_and_say_so(site):
    report = json.loads(status("--json", "--count-cap", "2"))
    assert report["states"]["scheduled"] == {"count": 2, "capped": True}
    assert "scheduled 2+" in status("--count-cap", "2")
    assert len(json.loads(status("--json", "--next", "1"))["next_due"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--next", "0"], "must be at least 1"), (["--count-cap", "many"], "not a whole number")],
)
def test_bad_options_are_usage_errors(args, message):
    with pytest.raises(CommandError, match=message):
        status(*args)


def test_a_database_error_is_a_command_error_not_a_traceback(monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(selectors, "state_counts", broken)
    with pytest.raises(CommandError, match="cannot read the alarms' database: connection refused"):
        status()


def test_a_worker_id_of_another_worker_holds_nothing_here(site):
    Worker.objects.create(
        id=uuid.uuid4(),
        name="w-idle",
        hostname="h",
        pid=3,
        executor="inline",
        started_at=site["now"],
        heartbeat_at=site["now"],
    )
    by_name = {worker["name"]: worker for worker in json.loads(status("--json"))["workers"]}
    assert by_name["w-idle"]["held"] == 0
