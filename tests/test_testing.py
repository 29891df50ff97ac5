"""The helpers ``django_alarms.testing`` ships for users' tests: run_due, Clock, fixtures,
factories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.utils import timezone as dj_timezone

from django_alarms import alarms, clock, testing
from django_alarms.models import Alarm, Attempt
from django_alarms.testing import Clock, run_due
from tests.factories import AlarmFactory, AttemptFactory

UTC = timezone.utc
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)

db = pytest.mark.django_db


# -- run_due --------------------------------------------------------------------------------


@db
def test_run_due_returns_the_number_of_attempts_it_made(delivered):
    with clock.frozen(T0):
        for n in range(3):
            alarms.schedule("tests.ok", {"n": n})
        alarms.schedule("tests.ok", delay=60)

    assert run_due(now=T0) == 3
    assert run_due(now=T0) == 0
    assert run_due(now=T0 + timedelta(seconds=60)) == 1
    assert sorted(context.payload["n"] for context in delivered[:3]) == [0, 1, 2]


@db
def test_run_due_counts_every_attempt_including_retries_due_at_now():
    with clock.frozen(T0):
        alarms.schedule("tests.boom")  # 3 attempts, 10 s then 20 s apart

    assert run_due(now=T0 + timedelta(hours=1)) == 1
    assert run_due(now=T0 + timedelta(hours=2)) == 1
    assert Attempt.objects.count() == 2


@db
def test_run_due_with_a_later_now_moves_time_for_everything_the_delivery_computes():
    later = T0 + timedelta(days=2, minutes=3)
    with clock.frozen(T0):
        alarm = alarms.schedule("tests.boom", max_attempts=3)

    run_due(now=later)

    attempt = Attempt.objects.get()
    assert attempt.started_at == attempt.finished_at == later
    alarm.refresh_from_db()
    assert alarm.due_at == later + timedelta(seconds=10)
    assert alarm.updated_at == later


@db
def test_run_due_without_now_uses_the_clock(delivered):
    with clock.frozen(T0):
        alarms.schedule("tests.ok", delay=30)
        assert run_due() == 0
        clock.advance(timedelta(seconds=30))
        assert run_due() == 1

    assert Attempt.objects.get().started_at == T0 + timedelta(seconds=30)


@db
def test_run_due_without_now_or_frozen_clock_uses_the_current_time(delivered):
    alarms.schedule("tests.ok")

    assert run_due() == 1


@db
def test_a_handler_that_retries_with_no_delay_is_bounded_by_max_attempts():
    with clock.frozen(T0):
        alarm = alarms.schedule("tests.retry", {"delay": 0}, max_attempts=4)

    assert run_due(now=T0) == 4

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.FAILED
    assert alarm.payload == {"delay": 0, "step": 3}


@db
def test_run_due_rejects_a_naive_now():
    with pytest.raises(ValueError, match="aware"):
        run_due(now=datetime(2031, 3, 3, 9, 0))


# -- Clock ----------------------------------------------------------------------------------


@db
def test_clock_freezes_time_for_schedule_and_run_due(delivered):
    with Clock(T0) as frozen:
        assert frozen.now == T0 == clock.now()
        alarm = alarms.schedule("tests.ok", delay=timedelta(minutes=5))
        assert alarm.due_at == T0 + timedelta(minutes=5)
        assert frozen.run_due() == 0

        assert frozen.advance(timedelta(minutes=5)) == T0 + timedelta(minutes=5)
        assert frozen.run_due() == 1

        assert frozen.advance(30) == T0 + timedelta(minutes=5, seconds=30)
        assert frozen.set(T0 + timedelta(days=1)) == T0 + timedelta(days=1)
        assert clock.now() == T0 + timedelta(days=1)

    assert clock.now() != T0 + timedelta(days=1)
    assert delivered[0].due_at == T0 + timedelta(minutes=5)


def test_clock_without_a_start_starts_at_the_current_time():
    before = dj_timezone.now()
    with Clock() as frozen:
        after = dj_timezone.now()
        assert before <= frozen.now <= after
        assert frozen.now == clock.now()


def test_clocks_nest():
    with Clock(T0), Clock(T0 + timedelta(hours=1)) as inner:
        assert clock.now() == inner.now == T0 + timedelta(hours=1)
    with Clock(T0):
        with Clock(T0 + timedelta(hours=1)):
            pass
        assert clock.now() == T0


def test_the_frozen_clock_needs_an_aware_time():
    with pytest.raises(ValueError, match="aware"), clock.frozen(datetime(2031, 3, 3)):
        pass


def test_advance_needs_a_frozen_clock():
    with pytest.raises(RuntimeError):
        clock.advance(timedelta(seconds=1))


# -- pytest fixtures ------------------------------------------------------------------------


@db
def test_the_alarms_clock_fixture_is_a_frozen_clock(alarms_clock, delivered):
    start = alarms_clock.now
    assert clock.now() == start

    alarms.schedule("tests.ok", delay=timedelta(hours=1))
    assert alarms_clock.run_due() == 0
    alarms_clock.advance(timedelta(hours=1))

    assert clock.now() == start + timedelta(hours=1)
    assert alarms_clock.run_due() == 1
    assert Attempt.objects.get().started_at == start + timedelta(hours=1)


def test_the_alarm_runner_fixture_is_run_due_with_the_database(alarm_runner, delivered):
    # No django_db mark: the fixture enables the database itself.
    assert alarm_runner is run_due
    alarms.schedule("tests.ok", {"n": 1})

    assert alarm_runner() == 1
    assert delivered[0].payload == {"n": 1}


# -- factories ------------------------------------------------------------------------------


@db
def test_alarm_factory_makes_a_scheduled_alarm_due_now(delivered):
    alarm = AlarmFactory()

    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.handler == "tests.noop"
    assert alarm.due_at <= dj_timezone.now()
    assert run_due() == 1
    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SUCCEEDED
    assert delivered[0].id == alarm.pk


@db
@pytest.mark.parametrize(
    ("trait", "state"),
    [
        ("failed", Alarm.State.FAILED),
        ("succeeded", Alarm.State.SUCCEEDED),
        ("cancelled", Alarm.State.CANCELLED),
        ("paused", Alarm.State.PAUSED),
    ],
)
def test_alarm_factory_traits_make_alarms_in_other_states(trait, state):
    alarm = AlarmFactory(**{trait: True})

    assert Alarm.objects.get(pk=alarm.pk).state == state
    assert run_due() == 0


@db
def test_a_failed_factory_alarm_can_be_retried(delivered):
    alarm = AlarmFactory(failed=True)

    alarms.retry(alarm)

    assert run_due() == 1
    assert delivered[0].attempt == 1
    assert Attempt.objects.get(alarm=alarm).number == 6


@db
def test_attempt_factory_makes_an_attempt_of_a_new_alarm():
    first = AttemptFactory()
    second = AttemptFactory(alarm=first.alarm, outcome=Attempt.Outcome.ERROR, error="boom")

    assert first.alarm.pk == second.alarm.pk
    assert first.handler == first.alarm.handler
    assert second.number > first.number
    assert first.duration is not None
    assert list(first.alarm.history.order_by("number").values_list("outcome", flat=True)) == [
        "ok",
        "error",
    ]


def test_the_factories_are_reachable_from_django_alarms_testing():
    assert issubclass(AlarmFactory, testing.AlarmFactory)
    assert AttemptFactory is testing.AttemptFactory
    with pytest.raises(AttributeError):
        testing.NoSuchFactory  # noqa: B018
