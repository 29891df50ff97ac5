"""``manage.py alarms_purge`` and ``alarms.purge``: only finished alarms, old enough, in batches."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError

from django_alarms import alarms, clock
from django_alarms.engines.workers import WorkerRows
from django_alarms.models import Alarm, Attempt
from django_alarms.testing import AlarmFactory, AttemptFactory
from django_alarms.types import State

pytestmark = pytest.mark.django_db


def purge(*args: str) -> str:
    out = io.StringIO()
    call_command("alarms_purge", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def rows():
    now = clock.now()
    old, recent = now - timedelta(days=40), now - timedelta(days=2)
    made = {
        "old_ok": AlarmFactory(handler="tests.ok", succeeded=True, finished_at=old),
        "old_failed": AlarmFactory(handler="tests.boom", failed=True, finished_at=old),
        "old_cancelled": AlarmFactory(handler="tests.ok", state=State.CANCELLED, finished_at=old),
        "recent_ok": AlarmFactory(handler="tests.ok", succeeded=True, finished_at=recent),
        # Active alarms are never purged, whatever their dates say.
        "scheduled": AlarmFactory(handler="tests.ok", finished_at=old),
        "paused": AlarmFactory(handler="tests.ok", state=State.PAUSED, finished_at=old),
        "running": AlarmFactory(handler="tests.ok", state=State.RUNNING, finished_at=old),
    }
    for alarm in made.values():
        AttemptFactory(alarm=alarm, started_at=old)
    return made


def left() -> set[str]:
    return set(Alarm.objects.values_list("pk", flat=True))


def test_only_finished_alarms_older_than_the_age_go_with_their_attempts(rows):
    text = purge("--older-than", "30d")
    assert text.startswith("deleted 3 cancelled/failed/succeeded alarm(s) with their attempts")
    kept = {rows[name].pk for name in ("recent_ok", "scheduled", "paused", "running")}
    assert left() == kept
    assert set(Attempt.objects.values_list("alarm_id", flat=True)) == kept


def test_state_and_handler_narrow_it(rows):
    assert "deleted 1 failed alarm(s)" in purge("--older-than", "30d", "--state", "failed")
    assert rows["old_failed"].pk not in left()
    text = purge("--older-than", "30d", "--state", "succeeded,cancelled", "--handler", "tests.boom")
    assert text.startswith("deleted 0")
    assert {rows["old_ok"].pk, rows["old_cancelled"].pk} <= left()


def test_dry_run_counts_and_deletes_nothing(rows):
    before = left()
    assert purge("--older-than", "30d", "--dry-run").startswith(
        "would delete 3 cancelled/failed/succeeded alarm(s) (dry run: nothing deleted)"
    )
    assert left() == before
    report = json.loads(purge("--older-than", "30d", "--dry-run", "--json"))
    assert report["alarms"] == 3
    assert report["dry_run"] is True


def test_batches_each_in_its_own_transaction(monkeypatch):
    old = clock.now() - timedelta(days=40)
    for _ in range(7):
        AlarmFactory(handler="tests.ok", succeeded=True, finished_at=old)
    sizes = []
    real = WorkerRows.delete_finished

    def counted(self, **kwargs):
        count = real(self, **kwargs)
        sizes.append(count)
        return count

    monkeypatch.setattr(WorkerRows, "delete_finished", counted)
    report = json.loads(purge("--older-than", "1d", "--batch-size", "3", "--json"))
    assert report["alarms"] == 7
    assert sizes == [3, 3, 1]
    assert report["longest_batch_seconds"] >= 0


def test_a_database_error_midway_says_how_many_went(monkeypatch):
    old = clock.now() - timedelta(days=40)
    for _ in range(4):
        AlarmFactory(handler="tests.ok", succeeded=True, finished_at=old)
    real = WorkerRows.delete_finished
    calls = []

    def failing(self, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise DatabaseError("disk full")
        return real(self, **kwargs)

    monkeypatch.setattr(WorkerRows, "delete_finished", failing)
    with pytest.raises(CommandError, match="the database failed after 2 alarm"):
        purge("--older-than", "1d", "--batch-size", "2")
    assert Alarm.objects.count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "30d", "--state", "scheduled"], "not a state that can be purged"),
        (["--older-than", "soon"], "is not a length of time"),
        (["--older-than", "30d", "--batch-size", "0"], "must be at least 1"),
        ([], "the following arguments are required: --older-than"),
    ],
)
def test_bad_options_are_usage_errors(args, message):
    with pytest.raises(CommandError, match=message):
        purge(*args)


def test_the_service_refuses_active_states_and_bad_arguments():
    with pytest.raises(alarms.InvalidAlarm, match="only finished alarms are purged"):
        alarms.purge(states=["paused"], older_than=timedelta(days=1))
    with pytest.raises(alarms.InvalidAlarm, match="older_than"):
        alarms.purge(older_than=-5)
    with pytest.raises(alarms.InvalidAlarm, match="batch_size"):
        alarms.purge(older_than=60, batch_size=0)
