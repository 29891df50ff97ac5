"""One handler answer or one stored row fails its own attempt, and nothing else (issue 13)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection

from django_alarms import alarms, clock, delivery
from django_alarms.exceptions import InvalidAlarm
from django_alarms.handlers import registry
from django_alarms.models import Alarm, Attempt
from tests.factories import claim, store_payload_text
from tests.test_delivery import LEASE, T0, WORKER_A, claim_all

pytestmark = pytest.mark.django_db

#: A schedule that a newer release might write: this version has no such rate type.
UNREADABLE = {
    "version": 1,
    "cron": None,
    "every": None,
    "rate": {"type": "Fortnightly", "n": 1},
    "timezone": "UTC",
    "start_at": T0.isoformat(),
    "end_at": None,
    "misfire": "once",
}


@pytest.fixture
def now():
    with clock.frozen(T0):
        yield T0


def test_rescue_of_a_lost_alarm_with_an_unreadable_schedule_fails_that_alarm_only(now):
    poison = Alarm.objects.create(
        handler="tests.ok",
        max_attempts=1,
        attempts=1,
        state="running",
        claimed_by=WORKER_A,
        due_at=T0 - timedelta(minutes=5),
        claimed_at=T0 - timedelta(minutes=5),
        lease_until=T0 - timedelta(minutes=1),
        occurrence_at=T0 - timedelta(minutes=5),
        recurrence=UNREADABLE,
    )
    healthy = alarms.schedule("tests.ok", {"n": 1})
    claim_all(WORKER_A, lease=timedelta(seconds=1))

    assert delivery.rescue(db="default", now=T0 + timedelta(minutes=1)) == 2

    poison.refresh_from_db()
    assert poison.state == Alarm.State.FAILED
    assert "UnreadableAlarm: the stored recurrence" in poison.last_error
    assert "unknown rate type" in poison.last_error
    healthy.refresh_from_db()
    assert healthy.state == Alarm.State.SCHEDULED, "the healthy alarm is delivered again"


def test_a_claimed_alarm_with_an_unreadable_schedule_fails_its_own_attempt(now):
    poison = alarms.schedule_recurring("tests.ok", every=timedelta(hours=1), max_attempts=1)
    Alarm.objects.filter(pk=poison.pk).update(recurrence=UNREADABLE, due_at=T0)
    healthy = alarms.schedule("tests.ok", {"n": 1})
    claims = claim_all(WORKER_A)
    assert {c.alarm_id for c in claims} == {poison.pk, healthy.pk}

    to_run, to_skip = delivery.catch_up(claims, now=T0)
    assert len(to_run) == 2
    assert not to_skip
    done = [delivery.decide(c, delivery.execute(c, now=lambda: T0), now=T0) for c in to_run]
    assert len(delivery.record(done, db="default", now=T0)) == 2

    poison.refresh_from_db()
    assert poison.state == Alarm.State.FAILED
    assert "UnreadableAlarm" in Attempt.objects.get(alarm=poison).error
    healthy.refresh_from_db()
    assert healthy.state == Alarm.State.SUCCEEDED


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda: alarms.Retry(delay=timedelta(days=999_999_999)), id="huge-delay"),
        pytest.param(
            lambda: alarms.Retry(
                at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
            ),
            id="past-9999-in-utc",
        ),
        pytest.param(lambda: alarms.Retry(at="2031-01-01"), id="not-a-datetime"),
        pytest.param(lambda: alarms.Retry(payload={"note": "a\x00b"}), id="payload-with-nul"),
        pytest.param(lambda: alarms.Retry(payload={"\ud800": 1}), id="payload-surrogate-key"),
        pytest.param(lambda: alarms.Retry(payload=_nested(40)), id="payload-too-deep"),
    ],
)
def test_a_retry_that_cannot_be_applied_is_a_failed_attempt_of_that_alarm(now, answer):
    @alarms.handler("tests.far_retry", max_attempts=3)
    def far_retry(alarm):
        return answer()

    try:
        odd = alarms.schedule("tests.far_retry", {})
        healthy = alarms.schedule("tests.ok", {"n": 1})
        claims = claim_all(WORKER_A)
        done = [delivery.decide(c, delivery.execute(c, now=lambda: T0), now=T0) for c in claims]
        assert len(delivery.record(done, db="default", now=T0)) == 2
    finally:
        registry.unregister("tests.far_retry")
    odd.refresh_from_db()
    assert odd.state == Alarm.State.SCHEDULED, "retried by its policy like any failure"
    attempt = Attempt.objects.get(alarm=odd)
    assert attempt.outcome == Attempt.Outcome.ERROR
    assert "InvalidAlarm: Retry(" in attempt.error or "the payload of Retry()" in attempt.error
    healthy.refresh_from_db()
    assert healthy.state == Alarm.State.SUCCEEDED


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"x": value}
    return value


def test_decide_never_raises_for_a_retry_that_overflows(now):
    """The recorder's own guard: a Retry that slipped past execute() still fails alone."""
    alarms.schedule("tests.ok", {})
    (held,) = claim_all(WORKER_A)
    result = delivery.Result("retry", T0, T0, retry=alarms.Retry(delay=timedelta(days=999_999_999)))
    done = delivery.decide(held, result, now=T0)
    assert done.state == Alarm.State.SCHEDULED
    assert done.result.outcome == "error"
    assert "InvalidAlarm" in done.result.error


@pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason=(
        "PostgreSQL's jsonb holds nothing but JSON; MariaDB checks the JSON of a row on every "
        "UPDATE of it, so such a row cannot be claimed or recorded at all there"
    ),
)
def test_a_row_whose_payload_is_not_json_fails_alone_and_the_rest_of_its_claim_runs(now):
    healthy = [alarms.schedule("tests.ok", {"n": n}) for n in range(3)]
    bad = alarms.schedule("tests.ok", {"n": "bad"})
    store_payload_text(bad.pk, "{not json")
    claims = claim(db="default", worker_id=WORKER_A, now=T0, lease_until=T0 + LEASE)
    assert len(claims) == 4
    (odd,) = [c for c in claims if c.problem]
    assert odd.alarm_id == bad.pk
    assert "UnreadableAlarm: the stored payload" in odd.problem
    results = [delivery.execute(c, now=lambda: T0) for c in claims]
    assert [r.outcome for r in results].count("ok") == 3
    done = [delivery.decide(c, r, now=T0) for c, r in zip(claims, results, strict=True)]
    delivery.record(done, db="default", now=T0)
    for alarm in healthy:
        alarm.refresh_from_db()
        assert alarm.state == Alarm.State.SUCCEEDED
    assert Alarm.objects.filter(pk=bad.pk, state=Alarm.State.SCHEDULED).exists()


def test_a_side_thread_step_that_raises_is_logged_and_the_thread_goes_on(caplog):
    from django_alarms.worker.runner import Options, Runner

    worker = Runner(Options.from_settings(load_interval=timedelta(seconds=30)))

    def broken() -> None:
        raise InvalidAlarm("rate={'type': 'Fortnightly'}: unknown rate type")

    assert worker.supervisor.step("rescue", broken) is None
    assert "rescue failed unexpectedly" in caplog.text


# -- a worker frozen past its lease -----------------------------------------------------------


def _worker_holding(lease_in: timedelta):
    from django.utils import timezone as dj_timezone

    from django_alarms.worker.runner import Options, Runner

    worker = Runner(
        Options.from_settings(
            load_interval=timedelta(seconds=30),
            heartbeat_interval=timedelta(seconds=5),
            lease_grace=timedelta(seconds=1),
        )
    )
    worker.heartbeat.register()
    alarm = alarms.schedule("tests.ok", {})
    now = dj_timezone.now()
    (held,) = claim(
        db="default", worker_id=worker.id, now=now, lease_until=now + lease_in, ids=[alarm.pk]
    )
    worker.claimer.hold([held], now)
    return worker, held


def test_a_claim_whose_lease_has_passed_never_starts(caplog):
    worker, held = _worker_holding(lease_in=timedelta(seconds=-1))
    assert not worker.holdings.may_start(held)
    assert held.alarm_id not in worker.holdings, "dropped: the heartbeat renews it no more"
    assert "not started, its lease expired" in caplog.text
    fresh, current = _worker_holding(lease_in=timedelta(minutes=5))
    assert fresh.holdings.may_start(current)


def test_the_heartbeat_drops_the_claims_another_worker_took_over(caplog):
    worker, held = _worker_holding(lease_in=timedelta(minutes=5))
    # Another worker's rescue took it over while this one was frozen.
    Alarm.objects.filter(pk=held.alarm_id).update(claimed_by=WORKER_A)
    worker.heartbeat.beat()
    assert held.alarm_id not in worker.holdings
    assert not worker.holdings.may_start(held)
    assert "no longer held by this worker" in caplog.text


def test_the_heartbeat_keeps_what_it_renewed_startable():
    worker, held = _worker_holding(lease_in=timedelta(milliseconds=100))
    worker.heartbeat.beat()
    assert worker.holdings.may_start(held), "renewed for two heartbeats and the grace"


def test_the_inline_executor_asks_before_it_starts_an_attempt():
    from django_alarms.executors.inline import InlineExecutor
    from tests.factories import a_claim

    results: list = []
    asked: list = []

    def refuse(item):
        asked.append(item)
        return False

    executor = InlineExecutor(
        concurrency=1, on_result=lambda c, r: results.append(r), now=clock.now, may_start=refuse
    )
    executor.start()
    try:
        item = a_claim(handler="tests.ok")
        executor.submit(item)
        assert executor.wait_idle(5)
    finally:
        executor.stop()
    assert asked == [item]
    assert results == [], "never started, so nothing to record"
    assert executor.held() == 0


# -- a schedule that reaches the latest time an alarm can hold -----------------------------------


def test_a_recurring_alarm_whose_next_occurrence_passes_9999_ends_saying_so():
    start = datetime(9999, 6, 1, tzinfo=timezone.utc)
    with clock.frozen(start - timedelta(days=1)):
        alarm = alarms.schedule_recurring(
            "tests.ok", every=timedelta(days=300), start_at=start, max_attempts=1
        )
    assert alarm.due_at == start
    (held,) = claim_all(WORKER_A, at=start)
    done = delivery.decide(held, delivery.execute(held, now=lambda: start), now=start)
    delivery.record([done], db="default", now=start)

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SUCCEEDED, "the last occurrence was delivered"
    assert "its next occurrence would fall after 9999-12-30 (UTC)" in alarm.last_error
    assert Attempt.objects.get(alarm=alarm).outcome == "ok"


def test_a_schedule_ended_by_its_end_at_says_nothing_of_the_horizon():
    start = datetime(2031, 6, 1, tzinfo=timezone.utc)
    with clock.frozen(start - timedelta(days=1)):
        alarm = alarms.schedule_recurring(
            "tests.ok", every=timedelta(days=300), start_at=start, end_at=start + timedelta(days=1)
        )
    (held,) = claim_all(WORKER_A, at=start)
    done = delivery.decide(held, delivery.execute(held, now=lambda: start), now=start)
    delivery.record([done], db="default", now=start)
    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SUCCEEDED
    assert alarm.last_error == ""
