"""The state machine of DESIGN.md "States", driven through ``django_alarms.testing.run_due``."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.test import override_settings

from django_alarms import alarms, clock
from django_alarms.handlers import registry
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.recurrence import Recurrence
from django_alarms.signals import alarm_failed, alarm_retrying, alarm_succeeded
from django_alarms.testing import RUN_DUE_WORKER, run_due
from tests.factories import claim

pytestmark = pytest.mark.django_db

UTC = timezone.utc
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
WORKER = uuid.UUID("00000000-0000-0000-0000-0000000000bb")


@pytest.fixture
def now() -> Iterator[datetime]:
    with clock.frozen(T0):
        yield T0


def history(alarm: Alarm) -> list[tuple[int, str]]:
    return list(
        Attempt.objects.filter(alarm=alarm).order_by("number").values_list("number", "outcome")
    )


def reload(alarm: Alarm) -> Alarm:
    return Alarm.objects.get(pk=alarm.pk)


# -- one-off alarms -------------------------------------------------------------------------


def test_a_handler_that_returns_ends_the_alarm_succeeded_with_one_ok_attempt(now, delivered):
    alarm = alarms.schedule("tests.ok", {"n": 1})

    assert run_due(now=T0 + timedelta(seconds=2)) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SUCCEEDED
    assert alarm.attempts == 1
    assert alarm.finished_at == T0 + timedelta(seconds=2)
    assert alarm.last_error == ""
    assert alarm.claimed_by is None
    attempt = Attempt.objects.get(alarm=alarm)
    assert (attempt.number, attempt.outcome) == (1, Attempt.Outcome.OK)
    assert attempt.started_at == attempt.finished_at == T0 + timedelta(seconds=2)
    assert attempt.due_at == T0
    assert attempt.handler == "tests.ok"
    assert attempt.worker == RUN_DUE_WORKER
    assert (attempt.error, attempt.traceback) == ("", "")
    assert len(delivered) == 1


def test_a_succeeded_alarm_is_never_delivered_again(now, delivered):
    alarms.schedule("tests.ok")
    run_due(now=T0)

    assert run_due(now=T0 + timedelta(days=30)) == 0
    assert len(delivered) == 1


def test_an_exception_is_retried_with_backoff_until_max_attempts_then_failed(now, delivered):
    # tests.boom: max_attempts=3, backoff 10 s then 20 s, no jitter.
    alarm = alarms.schedule("tests.boom")

    assert run_due(now=T0) == 1
    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == T0 + timedelta(seconds=10)
    assert alarm.attempts == 1
    assert alarm.last_error == "RuntimeError: boom on attempt 1"
    first = Attempt.objects.get(alarm=alarm)
    assert first.outcome == Attempt.Outcome.ERROR
    assert first.error == "RuntimeError: boom on attempt 1"
    assert "Traceback (most recent call last)" in first.traceback
    assert "RuntimeError: boom on attempt 1" in first.traceback

    assert run_due(now=T0 + timedelta(seconds=10) - timedelta(microseconds=1)) == 0
    assert run_due(now=T0 + timedelta(seconds=10)) == 1
    assert reload(alarm).due_at == T0 + timedelta(seconds=30)

    assert run_due(now=T0 + timedelta(seconds=30)) == 1
    alarm = reload(alarm)
    assert alarm.state == Alarm.State.FAILED
    assert alarm.finished_at == T0 + timedelta(seconds=30)
    assert alarm.last_error == "RuntimeError: boom on attempt 3"
    assert history(alarm) == [(1, "error"), (2, "error"), (3, "error")]
    assert [context.attempt for context in delivered] == [1, 2, 3]
    assert run_due(now=T0 + timedelta(days=1)) == 0


def test_an_alarm_that_fails_then_succeeds_ends_succeeded(now):
    alarm = alarms.schedule("tests.flaky", {"succeed_on": 2})

    run_due(now=T0)
    run_due(now=T0 + timedelta(seconds=10))

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SUCCEEDED
    assert alarm.last_error == ""
    assert history(alarm) == [(1, "error"), (2, "ok")]


def test_max_attempts_of_one_fails_on_the_first_error(now):
    alarm = alarms.schedule("tests.boom", max_attempts=1)

    assert run_due(now=T0) == 1

    assert reload(alarm).state == Alarm.State.FAILED


def test_fail_fails_the_alarm_at_once_whatever_attempts_remain(now):
    alarm = alarms.schedule("tests.fail", max_attempts=5)

    assert run_due(now=T0) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.FAILED
    assert alarm.attempts == 1
    assert "no such account" in alarm.last_error
    attempt = Attempt.objects.get(alarm=alarm)
    assert attempt.outcome == Attempt.Outcome.ERROR
    assert "no such account" in attempt.error
    assert run_due(now=T0 + timedelta(days=1)) == 0


def test_retry_answer_redelivers_after_its_delay_with_the_new_payload(now, delivered):
    alarm = alarms.schedule("tests.retry", {"delay": 300})

    assert run_due(now=T0) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == T0 + timedelta(seconds=300)
    assert alarm.payload == {"delay": 300, "step": 1}
    assert alarm.last_error == "export not ready"
    attempt = Attempt.objects.get(alarm=alarm)
    assert (attempt.outcome, attempt.error) == (Attempt.Outcome.RETRY, "export not ready")

    assert run_due(now=T0 + timedelta(seconds=299)) == 0
    assert run_due(now=T0 + timedelta(seconds=300)) == 1
    assert [context.payload for context in delivered] == [
        {"delay": 300},
        {"delay": 300, "step": 1},
    ]
    assert reload(alarm).payload == {"delay": 300, "step": 2}


def test_retry_answers_past_max_attempts_fail_the_alarm(now):
    # tests.retry: max_attempts=3.
    alarm = alarms.schedule("tests.retry", {"delay": 60})

    for minute in range(3):
        assert run_due(now=T0 + timedelta(minutes=minute)) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.FAILED
    assert "3 attempts" in alarm.last_error
    assert history(alarm) == [(1, "retry"), (2, "retry"), (3, "retry")]
    assert run_due(now=T0 + timedelta(days=1)) == 0


def test_a_retry_answer_whose_payload_cannot_be_stored_is_a_failed_attempt(now):
    """The handler's fault, like any exception it raises: an ``error`` attempt retried with
    backoff, never a crash of the recording that leaves the alarm running."""
    alarm = alarms.schedule("tests.unstorable_retry")

    assert run_due(now=T0) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.claimed_by is None
    assert "payload" in alarm.last_error
    assert history(alarm) == [(1, "error")]


@override_settings(ALARMS={"BACKOFF": {"base": 10, "jitter": 0}})
def test_an_unknown_handler_in_the_worker_is_an_error_retried_never_dropped(now):
    def ephemeral(alarm: alarms.AlarmContext) -> None:
        pass

    alarms.handler("tests.ephemeral")(ephemeral)
    alarm = alarms.schedule("tests.ephemeral", max_attempts=3)
    registry.unregister("tests.ephemeral")

    assert run_due(now=T0) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == T0 + timedelta(seconds=10)
    assert "tests.ephemeral" in alarm.last_error
    attempt = Attempt.objects.get(alarm=alarm)
    assert attempt.outcome == Attempt.Outcome.ERROR
    assert "UnknownHandler" in attempt.error
    assert "'tests.ephemeral'" in attempt.error

    # A deploy brings the handler back: the next attempt delivers it.
    alarms.handler("tests.ephemeral")(ephemeral)
    assert run_due(now=T0 + timedelta(seconds=10)) == 1
    assert reload(alarm).state == Alarm.State.SUCCEEDED
    assert history(alarm) == [(1, "error"), (2, "ok")]


def test_an_unknown_handler_fails_after_max_attempts_with_its_name_in_the_error(now):
    alarm = alarms.schedule("tests.ok", max_attempts=2)
    registry.unregister("tests.ok")

    run_due(now=T0)
    run_due(now=T0 + HOUR)

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.FAILED
    assert "'tests.ok'" in alarm.last_error
    assert history(alarm) == [(1, "error"), (2, "error")]


# -- the handler's context ------------------------------------------------------------------


def test_the_context_carries_the_alarm_as_plain_data(now, delivered):
    alarm = alarms.schedule(
        "tests.flaky",
        {"succeed_on": 2, "account": 7},
        at=T0 + timedelta(minutes=5),
        key="acc-7",
        name="reminder",
        max_attempts=4,
    )

    run_due(now=T0 + timedelta(minutes=5))
    run_due(now=T0 + timedelta(minutes=5, seconds=10))

    first, second = delivered
    assert first.id == second.id == alarm.pk
    assert first.handler == "tests.flaky"
    assert (first.key, first.name) == ("acc-7", "reminder")
    assert first.payload == {"succeed_on": 2, "account": 7}
    assert first.due_at == T0 + timedelta(minutes=5)
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.max_attempts == second.max_attempts == 4
    assert first.created_at == T0
    assert first.recurrence is None
    assert first.last_error == ""
    assert second.last_error == "ConnectionError: partner down (attempt 1)"
    assert second.due_at == T0 + timedelta(minutes=5, seconds=10)
    assert not first.is_last_attempt


def test_the_context_of_the_last_attempt_says_so(now, delivered):
    alarms.schedule("tests.boom", max_attempts=2)

    run_due(now=T0)
    run_due(now=T0 + HOUR)

    assert [context.is_last_attempt for context in delivered] == [False, True]


def test_the_context_is_picklable(now, delivered):
    alarms.schedule("tests.ok", {"account": 7, "tags": ["a"]}, key="k", name="n")
    alarms.schedule_recurring("tests.ok", {"r": 1}, cron="*/5 * * * *", timezone="Europe/Paris")

    run_due(now=T0)

    assert len(delivered) == 2
    for context in delivered:
        copy = pickle.loads(pickle.dumps(context))
        assert copy == context
    recurring = next(context for context in delivered if context.recurrence is not None)
    assert isinstance(recurring.recurrence, Recurrence)
    assert recurring.recurrence.cron == "*/5 * * * *"


def test_signals_report_each_outcome_with_the_context(now):
    received: list[tuple[str, Any, str]] = []

    def on(name: str) -> Any:
        def receiver(sender: type[Alarm], alarm: alarms.AlarmContext, outcome: str, **kw: Any):
            received.append((name, alarm.handler, outcome))

        return receiver

    receivers = {
        alarm_succeeded: on("succeeded"),
        alarm_retrying: on("retrying"),
        alarm_failed: on("failed"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver, sender=Alarm)
    try:
        alarms.schedule("tests.ok")
        alarms.schedule("tests.boom", max_attempts=2)
        run_due(now=T0)
        run_due(now=T0 + HOUR)
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver, sender=Alarm)

    assert sorted(received) == [
        ("failed", "tests.boom", "error"),
        ("retrying", "tests.boom", "error"),
        ("succeeded", "tests.ok", "ok"),
    ]


# -- recurring alarms -----------------------------------------------------------------------


def test_a_recurring_alarm_is_delivered_at_each_occurrence_without_drift(now, delivered):
    alarm = alarms.schedule_recurring("tests.ok", {"r": 1}, every=timedelta(minutes=10))
    assert (alarm.due_at, alarm.occurrence_at) == (T0, T0)

    assert run_due(now=T0) == 1
    # Each delivery is late (7 s, then 5 min): the schedule still follows the occurrences.
    assert run_due(now=T0 + timedelta(minutes=10, seconds=7)) == 1
    assert run_due(now=T0 + timedelta(minutes=25)) == 1

    assert [context.due_at for context in delivered] == [
        T0,
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=20),
    ]
    assert [context.attempt for context in delivered] == [1, 1, 1]
    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == alarm.occurrence_at == T0 + timedelta(minutes=30)
    assert history(alarm) == [(1, "ok"), (2, "ok"), (3, "ok")]
    assert list(
        Attempt.objects.filter(alarm=alarm).order_by("number").values_list("due_at", flat=True)
    ) == [T0, T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)]


def test_a_recurring_alarm_starts_at_start_at(now, delivered):
    alarm = alarms.schedule_recurring("tests.ok", every=HOUR, start_at=T0 + timedelta(days=1))

    assert reload(alarm).due_at == T0 + timedelta(days=1)
    assert run_due(now=T0 + timedelta(hours=23)) == 0


def test_a_recurring_alarm_ends_succeeded_after_its_last_occurrence_before_end_at(now, delivered):
    alarm = alarms.schedule_recurring(
        "tests.ok", every=timedelta(minutes=10), end_at=T0 + timedelta(minutes=25)
    )

    for minutes in (0, 10, 20):
        assert run_due(now=T0 + timedelta(minutes=minutes)) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SUCCEEDED
    assert [context.due_at for context in delivered] == [
        T0 + timedelta(minutes=minutes) for minutes in (0, 10, 20)
    ]
    assert run_due(now=T0 + timedelta(days=1)) == 0


def test_a_recurring_alarm_that_fails_an_occurrence_goes_on_with_the_next(now, delivered):
    # tests.boom backs off 10 s; two attempts per occurrence.
    alarm = alarms.schedule_recurring("tests.boom", every=HOUR, max_attempts=2)

    run_due(now=T0)
    run_due(now=T0 + timedelta(seconds=10))

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == alarm.occurrence_at == T0 + HOUR
    assert alarm.last_error == "RuntimeError: boom on attempt 2"
    assert alarm.budget_start == alarm.attempts == 2

    assert run_due(now=T0 + HOUR) == 1
    assert delivered[-1].attempt == 1
    assert delivered[-1].due_at == T0 + HOUR
    assert [context.due_at for context in delivered[:2]] == [T0, T0]
    assert history(alarm) == [(1, "error"), (2, "error"), (3, "error")]


def test_a_recurring_retry_keeps_the_occurrence_it_is_for(now, delivered):
    alarms.schedule_recurring("tests.flaky", {"succeed_on": 2}, every=HOUR)

    run_due(now=T0)
    run_due(now=T0 + timedelta(seconds=10))

    assert [(context.due_at, context.attempt) for context in delivered] == [(T0, 1), (T0, 2)]
    assert Alarm.objects.get().due_at == T0 + HOUR


@pytest.mark.parametrize(
    ("misfire", "delivered_at", "attempts"),
    [
        pytest.param("once", [T0 + 3 * HOUR], 2, id="once"),
        pytest.param("skip", [], 1, id="skip"),
        pytest.param("all", [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR], 4, id="all"),
    ],
)
def test_misfire_policy_after_a_long_gap(now, delivered, misfire, delivered_at, attempts):
    alarm = alarms.schedule_recurring("tests.ok", every=HOUR, misfire=misfire)
    assert run_due(now=T0) == 1
    delivered.clear()

    # The workers were down: the 10:00, 11:00 and 12:00 occurrences are overdue at 12:30.
    made = run_due(now=T0 + timedelta(hours=3, minutes=30))

    assert made == len(delivered_at)
    assert [context.due_at for context in delivered] == delivered_at
    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == alarm.occurrence_at == T0 + 4 * HOUR
    assert alarm.attempts == attempts
    assert Attempt.objects.filter(alarm=alarm).count() == attempts


@pytest.mark.parametrize("misfire", ["once", "skip", "all"])
def test_a_single_overdue_occurrence_is_ordinary_lateness(now, delivered, misfire):
    alarms.schedule_recurring("tests.ok", every=HOUR, misfire=misfire)
    run_due(now=T0)
    delivered.clear()

    assert run_due(now=T0 + timedelta(hours=1, minutes=30)) == 1

    assert [context.due_at for context in delivered] == [T0 + HOUR]
    assert Alarm.objects.get().due_at == T0 + 2 * HOUR


def test_misfire_all_is_bounded(now, delivered):
    alarms.schedule_recurring("tests.ok", every=timedelta(minutes=1), misfire="all")
    run_due(now=T0)
    delivered.clear()

    made = run_due(now=T0 + timedelta(hours=5, seconds=30))

    assert made == 100
    assert delivered[-1].due_at == T0 + timedelta(hours=5)
    assert Alarm.objects.get().due_at == T0 + timedelta(hours=5, minutes=1)


# -- lost attempts --------------------------------------------------------------------------


def test_an_expired_lease_is_recorded_as_lost_and_delivered_again(now, delivered):
    Worker.objects.create(
        id=WORKER,
        name="host-1:4242",
        hostname="host-1",
        pid=4242,
        executor="inline",
        started_at=T0,
        heartbeat_at=T0,
    )
    alarm = alarms.schedule("tests.ok", {"n": 1})
    claim(db="default", worker_id=WORKER, now=T0, lease_until=T0 + timedelta(seconds=1))

    assert run_due(now=T0 + timedelta(seconds=30)) == 1

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.SUCCEEDED
    assert history(alarm) == [(1, "lost"), (2, "ok")]
    lost = Attempt.objects.get(alarm=alarm, number=1)
    assert lost.worker == "host-1:4242"
    assert "LostAttempt" in lost.error
    assert "host-1:4242" in lost.error
    assert lost.started_at == T0
    assert lost.finished_at == T0 + timedelta(seconds=30)
    assert [context.attempt for context in delivered] == [2]
    assert delivered[0].last_error == lost.error


def test_a_live_lease_is_left_alone(now, delivered):
    alarm = alarms.schedule("tests.ok")
    claim(db="default", worker_id=WORKER, now=T0, lease_until=T0 + timedelta(minutes=5))

    assert run_due(now=T0 + timedelta(minutes=4)) == 0

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.RUNNING
    assert alarm.claimed_by == WORKER
    assert history(alarm) == []
    assert delivered == []


def test_a_lost_last_attempt_fails_the_alarm(now, delivered):
    alarm = alarms.schedule("tests.ok", max_attempts=1)
    claim(db="default", worker_id=WORKER, now=T0, lease_until=T0 + timedelta(seconds=1))

    assert run_due(now=T0 + HOUR) == 0

    alarm = reload(alarm)
    assert alarm.state == Alarm.State.FAILED
    assert "LostAttempt" in alarm.last_error
    assert history(alarm) == [(1, "lost")]
    assert delivered == []
