"""The admin's read-only queries: capped counts, hourly buckets, failing handlers, workers and
the index probes of the date hierarchy."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_alarms import selectors
from django_alarms.models import Alarm, Worker
from tests.factories import AlarmFactory, AttemptFactory

pytestmark = pytest.mark.django_db

UTC = dt_timezone.utc
NOW = datetime(2031, 3, 3, 9, 40, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_capped_count_stops_at_the_cap():
    Alarm.objects.bulk_create(
        Alarm(handler="tests.ok", due_at=NOW, max_attempts=1) for _ in range(5)
    )
    assert selectors.capped_count(Alarm.objects.all(), 10) == selectors.Capped(5, False)
    assert selectors.capped_count(Alarm.objects.all(), 5) == selectors.Capped(5, False)
    assert selectors.capped_count(Alarm.objects.all(), 3) == selectors.Capped(3, True)


def test_state_counts_and_overdue():
    AlarmFactory(due_at=NOW - HOUR)
    AlarmFactory(due_at=NOW + HOUR)
    AlarmFactory(failed=True, due_at=NOW - HOUR)
    AlarmFactory(paused=True, due_at=NOW - HOUR)
    counts = selectors.state_counts(cap=1)
    assert counts["scheduled"] == selectors.Capped(1, True)
    assert counts["failed"] == selectors.Capped(1, False)
    assert counts["running"] == selectors.Capped(0, False)
    assert set(counts) == set(Alarm.State.values)
    assert selectors.overdue_count(now=NOW) == selectors.Capped(1, False)


def test_oldest_overdue_is_the_scheduled_alarm_waiting_longest():
    assert selectors.oldest_overdue(now=NOW) is None
    AlarmFactory(key="late", due_at=NOW - HOUR)
    AlarmFactory(key="later", due_at=NOW - 2 * HOUR, failed=True)
    AlarmFactory(key="oldest", due_at=NOW - 3 * HOUR)
    AlarmFactory(key="future", due_at=NOW + HOUR)
    oldest = selectors.oldest_overdue(now=NOW)
    assert oldest is not None
    assert oldest.key == "oldest"


def test_due_per_hour_buckets_the_next_24_hours_of_scheduled_alarms():
    AlarmFactory(due_at=NOW + timedelta(minutes=5))  # this hour
    AlarmFactory(due_at=NOW + timedelta(minutes=25))  # 10:05: the next hour
    AlarmFactory(due_at=NOW + timedelta(minutes=30))
    AlarmFactory(due_at=NOW + timedelta(hours=23))  # the last bucket
    AlarmFactory(due_at=NOW + timedelta(hours=24, minutes=30))  # beyond
    AlarmFactory(due_at=NOW - timedelta(minutes=5))  # overdue: not coming
    AlarmFactory(due_at=NOW + timedelta(minutes=5), failed=True)  # not scheduled

    buckets = selectors.due_per_hour(now=NOW, hours_ahead=24)

    assert len(buckets) == 24
    assert buckets[0] == (datetime(2031, 3, 3, 9, tzinfo=UTC), 1)
    assert buckets[1] == (datetime(2031, 3, 3, 10, tzinfo=UTC), 2)
    assert buckets[23] == (datetime(2031, 3, 4, 8, tzinfo=UTC), 1)
    assert sum(count for _hour, count in buckets) == 4


def test_outcomes_per_hour_over_the_last_24_hours():
    AttemptFactory(outcome="ok", started_at=NOW - timedelta(minutes=10))
    AttemptFactory(outcome="error", started_at=NOW - timedelta(minutes=20))
    AttemptFactory(outcome="error", started_at=NOW - timedelta(hours=2))
    AttemptFactory(outcome="lost", started_at=NOW - timedelta(hours=23, minutes=30))
    AttemptFactory(outcome="ok", started_at=NOW - timedelta(hours=30))  # too old

    buckets = selectors.outcomes_per_hour(now=NOW, hours_back=24)

    assert len(buckets) == 24
    first_hour, first = buckets[0]
    assert first_hour == datetime(2031, 3, 2, 10, tzinfo=UTC)
    assert first == {"ok": 0, "retry": 0, "error": 0, "timeout": 0, "lost": 1}
    last_hour, last = buckets[-1]
    assert last_hour == datetime(2031, 3, 3, 9, tzinfo=UTC)
    assert last == {"ok": 1, "retry": 0, "error": 1, "timeout": 0, "lost": 0}
    assert buckets[-3][1]["error"] == 1
    assert sum(sum(counts.values()) for _hour, counts in buckets) == 4


def test_failing_handlers_worst_first_with_their_last_error():
    for minutes, error in ((50, "old error"), (10, "RuntimeError: latest")):
        AttemptFactory(
            handler="tests.boom",
            outcome="error",
            started_at=NOW - timedelta(minutes=minutes),
            error=error,
        )
    AttemptFactory(
        handler="tests.flaky", outcome="timeout", started_at=NOW - HOUR, error="TimeoutError"
    )
    AttemptFactory(handler="tests.ok", outcome="ok", started_at=NOW - HOUR)
    AttemptFactory(handler="tests.old", outcome="error", started_at=NOW - timedelta(days=2))

    failing = selectors.failing_handlers(now=NOW)

    assert [(row.handler, row.failures) for row in failing] == [
        ("tests.boom", 2),
        ("tests.flaky", 1),
    ]
    assert failing[0].last_error == "RuntimeError: latest"
    assert failing[0].last_failure_at == NOW - timedelta(minutes=10)
    assert selectors.failing_handlers(now=NOW, limit=1)[0].handler == "tests.boom"


def test_worker_summary():
    assert selectors.worker_summary(alive_since=NOW) == selectors.WorkerSummary(0, 0, 0)
    for name, heartbeat, in_flight in (("a", NOW, 2), ("b", NOW, 1), ("c", NOW - HOUR, 7)):
        Worker.objects.create(
            name=name,
            hostname="host",
            pid=1,
            executor="inline",
            started_at=NOW - HOUR,
            heartbeat_at=heartbeat,
            in_flight=in_flight,
        )
    summary = selectors.worker_summary(alive_since=NOW - timedelta(seconds=30))
    assert summary == selectors.WorkerSummary(alive=2, dead=1, in_flight=3)


def test_due_range_and_first_due_probe_each_state():
    assert selectors.due_range(Alarm.objects.all()) == (None, None)
    AlarmFactory(due_at=NOW)
    AlarmFactory(due_at=NOW - timedelta(days=400), failed=True)
    AlarmFactory(due_at=NOW + timedelta(days=30), succeeded=True)
    everything = Alarm.objects.all()

    assert selectors.due_range(everything) == (NOW - timedelta(days=400), NOW + timedelta(days=30))
    assert selectors.due_range(everything, ["scheduled"]) == (NOW, NOW)
    assert selectors.due_range(everything, ["running"]) == (None, None)
    assert selectors.first_due(everything, NOW - timedelta(days=1)) == NOW
    assert selectors.first_due(everything, NOW + timedelta(seconds=1)) == NOW + timedelta(days=30)
    assert selectors.first_due(everything, NOW + timedelta(days=31)) is None
    assert selectors.first_due(everything, NOW - timedelta(days=1), ["succeeded"]) == (
        NOW + timedelta(days=30)
    )


def test_periods_with_alarms():
    AlarmFactory(due_at=NOW)
    AlarmFactory(due_at=NOW + timedelta(days=2), failed=True)
    days = [
        (NOW - HOUR + timedelta(days=day), NOW + HOUR + timedelta(days=day)) for day in range(3)
    ]
    everything = Alarm.objects.all()
    assert selectors.periods_with_alarms(everything, days) == [True, False, True]
    assert selectors.periods_with_alarms(everything, days, ["failed"]) == [False, False, True]
    assert selectors.periods_with_alarms(everything, []) == []
    assert selectors.periods_with_alarms(Alarm.objects.none(), days) == [False, False, False]


def test_the_probes_are_one_query_each(django_assert_num_queries):
    AlarmFactory(due_at=NOW)
    periods = [(NOW + timedelta(days=day), NOW + timedelta(days=day + 1)) for day in range(31)]
    with django_assert_num_queries(1):
        selectors.periods_with_alarms(Alarm.objects.all(), periods)
    with django_assert_num_queries(1):
        selectors.due_range(Alarm.objects.all())


def test_estimated_row_count_comes_from_postgresql_statistics():
    AlarmFactory()
    if connection.vendor != "postgresql":
        assert selectors.estimated_row_count(Alarm) is None
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Alarm._meta.db_table)}")
    estimate = selectors.estimated_row_count(Alarm)
    assert estimate is not None
    assert estimate >= 0


def test_hour_floor_is_the_utc_hour():
    paris = datetime(2031, 3, 3, 10, 59, 59, tzinfo=dt_timezone(timedelta(hours=1)))
    assert selectors.hour_floor(paris) == datetime(2031, 3, 3, 9, tzinfo=UTC)


def test_selectors_only_read():
    AlarmFactory(due_at=NOW - HOUR)
    AttemptFactory(outcome="error", started_at=NOW)
    Worker.objects.create(
        name="w", hostname="h", pid=1, executor="inline", started_at=NOW, heartbeat_at=NOW
    )
    with CaptureQueriesContext(connection) as queries:
        selectors.state_counts()
        selectors.overdue_count(now=NOW)
        selectors.oldest_overdue(now=NOW)
        selectors.due_per_hour(now=NOW)
        selectors.outcomes_per_hour(now=NOW)
        selectors.failing_handlers(now=NOW)
        selectors.worker_summary(alive_since=NOW)
        selectors.due_range(Alarm.objects.all())
    assert queries.captured_queries
    for query in queries.captured_queries:
        assert query["sql"].lstrip().upper().startswith("SELECT"), query["sql"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL plan")
def test_failures_are_found_through_the_index_of_attempts_that_went_wrong():
    """``ok`` attempts are left out of the outcome index (one index entry less per successful
    delivery); the queries for failures must still be able to use it."""
    from django_alarms.models import Attempt
    from django_alarms.types import Outcome

    AttemptFactory(outcome=Outcome.ERROR, started_at=NOW - HOUR)
    failures = Attempt.objects.filter(outcome__in=selectors.FAILURES, started_at__gte=NOW - HOUR)
    one_kind = Attempt.objects.filter(outcome=Outcome.TIMEOUT).order_by("-started_at")[:50]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for queryset in (failures, one_kind):
            sql, params = queryset.query.sql_with_params()
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "alarms_attempt_not_ok" in plan, plan
