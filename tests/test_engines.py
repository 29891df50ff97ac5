"""The engines: one batch of completions of every kind, written on each database.

PostgreSQL writes a batch's completions in one statement (``UPDATE ... FROM unnest(...)``),
other databases one alarm at a time; both must leave every row as ``delivery.decide`` said.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from django_alarms import alarms, clock, delivery
from django_alarms.engines import LET_GO, get_engine
from django_alarms.engines.base import Engine
from django_alarms.models import Alarm, Attempt
from tests.factories import claim

pytestmark = pytest.mark.django_db

T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
WORKER = uuid.UUID("00000000-0000-0000-0000-00000000000a")
OTHER = uuid.UUID("00000000-0000-0000-0000-00000000000b")


@pytest.fixture
def now() -> Iterator[datetime]:
    with clock.frozen(T0):
        yield T0


def decided(held, at: datetime = T0) -> delivery.Completion:
    result = delivery.execute(held, now=lambda: at)
    return delivery.decide(held, result, now=at, worker="w")


def test_one_batch_of_every_kind_of_completion_is_written_as_decided(now):
    # Two of each kind: the batch path of PostgreSQL needs at least two completions.
    every = [alarms.schedule_recurring("tests.ok", every=timedelta(minutes=1)) for _ in range(2)]
    cancelled = alarms.schedule_recurring("tests.ok", every=timedelta(minutes=1))
    retried = [alarms.schedule("tests.boom", at=T0) for _ in range(2)]
    failed = [alarms.schedule("tests.fail", at=T0) for _ in range(2)]
    succeeded = [alarms.schedule("tests.ok", at=T0) for _ in range(2)]
    taken_over = alarms.schedule_recurring("tests.ok", every=timedelta(minutes=1))
    at = T0 + timedelta(minutes=1)
    held = {item.alarm_id: item for item in claim(worker_id=WORKER, now=at, lease_until=at)}
    assert len(held) == 10
    alarms.cancel(cancelled)  # while it runs: asked, and it ends cancelled when recorded
    # The rescue gave this one to another worker: its completion must change nothing.
    Alarm.objects.filter(pk=taken_over.pk).update(claimed_by=OTHER)
    completions = [decided(item, at) for item in held.values()]

    applied = delivery.record(completions, db="default", now=at)

    assert {item.claim.alarm_id for item in applied} == set(held) - {taken_over.pk}
    rows = {row.pk: row for row in Alarm.objects.all()}
    decided_by_id = {item.claim.alarm_id: item for item in completions}
    for alarm in every:
        row, want = rows[alarm.pk], decided_by_id[alarm.pk]
        assert want.due_at is not None
        assert want.fresh_budget
        assert (row.state, row.due_at, row.occurrence_at) == (
            "scheduled",
            want.due_at,
            want.occurrence_at,
        )
        assert (row.attempts, row.budget_start, row.finished_at) == (1, 1, None)
    assert (rows[cancelled.pk].state, rows[cancelled.pk].finished_at) == ("cancelled", at)
    for alarm in retried:
        row = rows[alarm.pk]
        assert row.state == "scheduled"
        assert row.due_at == decided_by_id[alarm.pk].due_at > at
        assert row.budget_start == 0
        assert row.finished_at is None
        assert row.last_error.startswith("RuntimeError: boom on attempt 1")
    for alarm in failed:
        assert (rows[alarm.pk].state, rows[alarm.pk].finished_at) == ("failed", at)
        assert rows[alarm.pk].due_at == T0, "a failure keeps its due time"
    for alarm in succeeded:
        assert (rows[alarm.pk].state, rows[alarm.pk].finished_at) == ("succeeded", at)
    for alarm_id in set(held) - {taken_over.pk}:
        row = rows[alarm_id]
        assert all(getattr(row, column) is None for column in LET_GO), row
        assert row.updated_at == at
    untouched = rows[taken_over.pk]
    assert (untouched.state, untouched.claimed_by, untouched.attempts) == ("running", OTHER, 1)
    assert Attempt.objects.count() == 9


def test_a_batch_fenced_on_the_lease_writes_only_what_is_still_expired(now):
    """The rescue's fence (an expired lease) goes through the ORM path on every database."""
    first, second = (
        alarms.schedule_recurring("tests.ok", every=timedelta(minutes=1)) for _ in range(2)
    )
    at = T0 + timedelta(minutes=1)
    held = claim(worker_id=WORKER, now=at, lease_until=at)
    Alarm.objects.filter(pk=second.pk).update(lease_until=at + timedelta(hours=1))  # renewed
    later = at + timedelta(seconds=1)
    completions = [decided(item, later) for item in held]

    applied = delivery.record(
        completions, db="default", now=later, fence={"lease_until__lt": later}
    )

    assert [item.claim.alarm_id for item in applied] == [first.pk]
    assert Alarm.objects.get(pk=second.pk).state == "running"


def test_each_database_gets_its_own_engine():
    engine = get_engine("default")
    assert engine.db == "default"
    expected = {"postgresql": "PostgreSQLEngine", "sqlite": "SQLiteEngine", "mysql": "MySQLEngine"}
    assert type(engine).__name__ == expected[connection.vendor]
    assert isinstance(engine, Engine)
    assert (engine.clock_query is None) == (connection.vendor == "sqlite")
    assert engine.notifies == (connection.vendor == "postgresql")
    assert engine.watches_commits == (connection.vendor == "sqlite")


@pytest.mark.parametrize(
    "error", ['quote " and backslash \\ and {braces, commas}', "NULL", "", "é ☃ \t\n"]
)
def test_a_batch_keeps_each_error_text_as_it_was(now, error):
    """PostgreSQL sends a batch's errors as one array literal: each must arrive unchanged."""
    both = [alarms.schedule_recurring("tests.ok", every=timedelta(minutes=1)) for _ in range(2)]
    at = T0 + timedelta(minutes=1)
    held = claim(worker_id=WORKER, now=at, lease_until=at)
    completions = [dataclasses.replace(decided(item, at), last_error=error) for item in held]

    assert len(delivery.record(completions, db="default", now=at)) == 2

    assert {Alarm.objects.get(pk=alarm.pk).last_error for alarm in both} == {error}


def test_claims_made_together_each_carry_their_own_schedule(now):
    """A claim statement decodes each distinct stored schedule once and shares it."""
    hourly = [alarms.schedule_recurring("tests.ok", cron="0 * * * *") for _ in range(3)]
    daily = alarms.schedule_recurring("tests.ok", cron="0 0 * * *")
    at = T0 + timedelta(days=1)
    held = {item.alarm_id: item for item in claim(worker_id=WORKER, now=at, lease_until=at)}
    assert {held[a.pk].schedule.cron for a in hourly} == {"0 * * * *"}
    assert held[daily.pk].schedule.cron == "0 0 * * *"
    assert held[daily.pk].recurrence["cron"] == "0 0 * * *"
    assert len({id(held[a.pk].schedule) for a in hourly}) == 1, "decoded once"


def test_a_workers_queues_and_handlers_narrow_its_window_feed_and_claims(now):
    """``run_alarms --queues`` (and ``--handlers``): the hand-written reads and claims of
    PostgreSQL and SQLite, and the ORM's elsewhere, keep to what the worker serves."""
    from django_alarms.engines import Served

    default = alarms.schedule("tests.ok", at=T0)
    emails = alarms.schedule("tests.ok", at=T0, queue="emails", priority=9)
    other = alarms.schedule("tests.boom", at=T0, queue="emails")
    engine = get_engine("default")
    until, since = T0 + timedelta(minutes=1), T0 - timedelta(minutes=1)

    def ids(rows):
        return {row["id"] for row in rows}

    served = Served(queues=["emails"])
    assert ids(engine.window(until=until, limit=10, served=served)) == {emails.pk, other.pk}
    assert ids(engine.changes(since=since, until=until, limit=10, served=served)) == {
        emails.pk,
        other.pk,
    }
    both = Served(handlers=["tests.ok"], queues=["emails"])
    assert ids(engine.window(until=until, limit=10, served=both)) == {emails.pk}
    assert ids(engine.window(until=until, limit=10, served=Served())) == {
        default.pk,
        emails.pk,
        other.pk,
    }
    taken = claim(worker_id=WORKER, now=T0, lease_until=until, queues=["emails"], handlers=None)
    assert {item.alarm_id for item in taken} == {emails.pk, other.pk}
    assert {item.alarm_id: item.priority for item in taken}[emails.pk] == 9
    assert Alarm.objects.get(pk=default.pk).state == "scheduled"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("priority", 101, "between -100 and 100"),
        ("priority", 1.5, "must be an integer"),
        ("queue", "", "must not be empty"),
        ("queue", "q" * 101, "the limit is 100"),
        ("queue", 7, "must be a string"),
    ],
)
def test_priority_and_queue_are_validated(field, value, problem):
    with pytest.raises(alarms.InvalidAlarm, match=problem):
        alarms.schedule("tests.ok", **{field: value})
    assert not Alarm.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("priority", 101, "between -100 and 100"), ("queue", "", "must not be empty")],
)
def test_schedule_many_validates_each_specs_priority_and_queue(field, value, problem):
    good = alarms.Spec("tests.ok", priority=5, queue="emails")
    with pytest.raises(alarms.InvalidAlarm, match=rf"specs\[1\]: .*{problem}"):
        alarms.schedule_many([good, alarms.Spec("tests.ok", **{field: value})])
    assert not Alarm.objects.exists()


def test_schedule_many_stores_each_specs_priority_and_queue():
    """The specs share every other argument: the preparer reuses what it validated for the
    first, and still takes each one's priority and queue."""
    created = alarms.schedule_many(
        [
            alarms.Spec("tests.ok", {"n": 1}, priority=5, queue="emails"),
            alarms.Spec("tests.ok", {"n": 2}),
            alarms.Spec("tests.ok", {"n": 3}, priority=-100),
        ]
    )
    stored = {a.pk: (a.priority, a.queue) for a in Alarm.objects.all()}
    assert [stored[a.pk] for a in created] == [(5, "emails"), (0, "default"), (-100, "default")]
