"""Claims, fencing and rescue: ``django_alarms.claims`` and ``django_alarms.delivery``.

A worker that froze past its lease and wakes up must change nothing: every write that ends,
extends or releases an attempt is conditional on the claim (alarm id, attempt number, worker).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from django_alarms import alarms, clock, delivery, outcomes
from django_alarms.claims import Claim
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.testing import run_due
from tests.factories import claim, extend, release

pytestmark = pytest.mark.django_db

UTC = timezone.utc
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
WORKER_A = uuid.UUID("00000000-0000-0000-0000-00000000000a")
WORKER_B = uuid.UUID("00000000-0000-0000-0000-00000000000b")
LEASE = timedelta(minutes=5)


@pytest.fixture
def now() -> Iterator[datetime]:
    with clock.frozen(T0):
        yield T0


def claim_all(
    worker: uuid.UUID = WORKER_A, at: datetime = T0, lease: timedelta = LEASE
) -> list[Claim]:
    return claim(db="default", worker_id=worker, now=at, lease_until=at + lease)


def completion(held: Claim, at: datetime = T0) -> delivery.Completion:
    result = delivery.execute(held, now=lambda: at)
    return delivery.decide(held, result, now=at, worker=str(held.worker_id))


def snapshot(alarm_id: uuid.UUID) -> tuple[object, ...]:
    alarm = Alarm.objects.get(pk=alarm_id)
    return (
        alarm.state,
        alarm.attempts,
        alarm.due_at,
        alarm.claimed_by,
        alarm.lease_until,
        alarm.payload,
        alarm.last_error,
        alarm.finished_at,
    )


STALE = {
    "other-worker": {"worker_id": WORKER_B},
    "other-attempt": {"number": 2, "budget_start": 1},
}


# -- claims ---------------------------------------------------------------------------------


def test_a_claim_takes_due_scheduled_alarms_earliest_first(now):
    late = alarms.schedule("tests.ok", at=T0 - timedelta(minutes=1))
    early = alarms.schedule("tests.ok", at=T0 - timedelta(minutes=2))
    alarms.schedule("tests.ok", at=T0 + timedelta(seconds=1))
    alarms.pause(alarms.schedule("tests.ok"))

    (first,) = claim(db="default", worker_id=WORKER_A, now=T0, lease_until=T0 + LEASE, limit=1)
    held = [first, *claim_all()]

    assert first.alarm_id == early.pk
    assert {item.alarm_id for item in held} == {early.pk, late.pk}
    assert {item.number for item in held} == {1}
    alarm = Alarm.objects.get(pk=early.pk)
    assert alarm.state == Alarm.State.RUNNING
    assert (alarm.claimed_by, alarm.claimed_at, alarm.lease_until) == (WORKER_A, T0, T0 + LEASE)


def test_a_claimed_alarm_cannot_be_claimed_again(now):
    alarms.schedule("tests.ok")
    assert len(claim_all(WORKER_A)) == 1

    assert claim_all(WORKER_B) == []


def test_a_claim_reads_back_what_the_delivery_needs(now):
    alarm = alarms.schedule("tests.ok", {"n": 1}, key="k", name="n", max_attempts=4, timeout=9)

    (held,) = claim_all()

    assert held.alarm_id == alarm.pk
    assert (held.handler, held.key, held.name, held.payload) == ("tests.ok", "k", "n", {"n": 1})
    assert (held.due_at, held.created_at, held.intended_at) == (T0, T0, T0)
    assert (held.number, held.budget_attempt, held.max_attempts) == (1, 1, 4)
    assert held.timeout == 9.0
    assert (held.worker_id, held.lease_until) == (WORKER_A, T0 + LEASE)
    context = delivery.context_for(held)
    assert (context.id, context.attempt, context.due_at) == (alarm.pk, 1, T0)


def test_the_context_a_handler_gets_is_the_one_the_dataclass_would_build(now):
    """context_for() fills AlarmContext's slots itself (cheaper than the frozen __init__):
    every field is set, in the order of the fields, to the value the constructor would get,
    and it stays frozen."""
    from django_alarms.recurrence import Recurrence
    from django_alarms.types import AlarmContext

    alarms.schedule_recurring("tests.ok", {"n": 2}, every=60, key="k", name="r", max_attempts=3)
    (held,) = claim_all()
    held = dataclasses.replace(held, budget_start=0, last_error="ValueError: before")

    context = delivery.context_for(held)

    assert context == AlarmContext(
        id=held.alarm_id,
        handler="tests.ok",
        key="k",
        name="r",
        payload={"n": 2},
        due_at=held.occurrence_at,
        attempt=1,
        max_attempts=3,
        created_at=T0,
        recurrence=Recurrence.from_json(held.recurrence),
        last_error="ValueError: before",
    )
    assert context.recurrence is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.payload = {}  # type: ignore[misc]


def test_a_claim_can_be_limited_to_ids_and_handlers(now):
    first = alarms.schedule("tests.ok")
    second = alarms.schedule("tests.noop")

    assert claim(db="default", worker_id=WORKER_A, now=T0, lease_until=T0, ids=[]) == []
    only = claim(db="default", worker_id=WORKER_A, now=T0, lease_until=T0, ids=[second.pk])
    assert [item.alarm_id for item in only] == [second.pk]
    assert (
        claim(db="default", worker_id=WORKER_A, now=T0, lease_until=T0, handlers=["tests.noop"])
        == []
    )
    rest = claim(db="default", worker_id=WORKER_A, now=T0, lease_until=T0, handlers=["tests.ok"])
    assert [item.alarm_id for item in rest] == [first.pk]


# -- fenced recording -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "handler",
    [
        # A one-off alarm that succeeded goes through the bulk UPDATE of its attempt number;
        # anything else (here: a retry) through one UPDATE per alarm.
        pytest.param("tests.ok", id="bulk-path"),
        pytest.param("tests.boom", id="per-row-path"),
    ],
)
@pytest.mark.parametrize("stale", list(STALE), ids=list(STALE))
def test_record_of_a_claim_no_longer_held_writes_nothing(now, handler, stale):
    alarm = alarms.schedule(handler)
    (held,) = claim_all()
    before = snapshot(alarm.pk)
    impostor = dataclasses.replace(held, **STALE[stale])

    applied = delivery.record([completion(impostor)], db="default", now=T0)

    assert applied == []
    assert snapshot(alarm.pk) == before
    assert Attempt.objects.count() == 0


@pytest.mark.parametrize(
    "handler",
    [pytest.param("tests.ok", id="bulk-path"), pytest.param("tests.boom", id="per-row-path")],
)
def test_record_of_a_held_claim_applies_it(now, handler):
    alarm = alarms.schedule(handler)
    (held,) = claim_all()
    done = completion(held)

    assert delivery.record([done], db="default", now=T0) == [done]

    alarm.refresh_from_db()
    assert alarm.state != Alarm.State.RUNNING
    assert alarm.claimed_by is None
    assert Attempt.objects.filter(alarm=alarm, number=1).count() == 1


def test_a_bulk_record_applies_the_claims_still_held_and_only_those(now):
    kept = [alarms.schedule("tests.ok", {"n": n}) for n in range(3)]
    still_held = claim_all(WORKER_A)
    taken = alarms.schedule("tests.ok", {"n": "taken"})
    (lost,) = claim_all(WORKER_A, lease=timedelta(seconds=1))
    later = T0 + timedelta(minutes=1)
    # Worker A froze: its short lease expired, the alarm was rescued and worker B holds it now.
    assert delivery.rescue(db="default", now=later) == 1
    (current,) = claim_all(WORKER_B, at=later)
    assert current.alarm_id == taken.pk
    before = snapshot(taken.pk)
    # Worker A wakes up and records its four attempts (all number 1: one bulk group).
    frozen = [completion(item, later) for item in [lost, *still_held]]

    applied = delivery.record(frozen, db="default", now=later)

    assert sorted(item.claim.alarm_id for item in applied) == sorted(a.pk for a in kept)
    assert snapshot(taken.pk) == before
    states = Alarm.objects.filter(pk__in=[a.pk for a in kept]).values_list("state", flat=True)
    assert set(states) == {"succeeded"}
    ok = Attempt.objects.filter(outcome="ok").values_list("alarm_id", flat=True)
    assert sorted(ok) == sorted(a.pk for a in kept)


def test_a_bulk_record_fences_each_claim_with_its_own_worker(now):
    kept = [alarms.schedule("tests.ok", {"n": n}) for n in range(3)]
    other = alarms.schedule("tests.ok", {"n": "other"})
    held = {item.alarm_id: item for item in claim_all(WORKER_A)}
    before = snapshot(other.pk)
    # One completion claims to be worker B's, but worker A holds that alarm: B's write must
    # change nothing, even in a bulk group led by one of A's completions.
    completions = [completion(held[alarm.pk]) for alarm in kept]
    completions.append(completion(dataclasses.replace(held[other.pk], worker_id=WORKER_B)))

    applied = delivery.record(completions, db="default", now=T0)

    assert sorted(item.claim.alarm_id for item in applied) == sorted(a.pk for a in kept)
    assert snapshot(other.pk) == before
    assert not Attempt.objects.filter(alarm=other).exists()


def test_a_worker_that_wakes_up_after_its_alarm_was_rescued_changes_nothing(now, delivered):
    alarm = alarms.schedule("tests.ok")
    (frozen,) = claim_all(lease=timedelta(seconds=1))
    later = T0 + timedelta(minutes=1)
    assert run_due(now=later) == 1  # rescued as lost, then delivered by another worker
    before = snapshot(alarm.pk)

    applied = delivery.record([completion(frozen, later)], db="default", now=later)

    assert applied == []
    assert snapshot(alarm.pk) == before
    outcomes = (
        Attempt.objects.filter(alarm=alarm).order_by("number").values_list("outcome", flat=True)
    )
    assert list(outcomes) == ["lost", "ok"]


def test_a_late_record_after_a_rescue_cannot_overwrite_the_new_attempt(now):
    alarm = alarms.schedule("tests.boom")
    (frozen,) = claim_all(WORKER_A, lease=timedelta(seconds=1))
    later = T0 + timedelta(minutes=1)
    assert delivery.rescue(db="default", now=later) == 1
    (current,) = claim_all(WORKER_B, at=later)
    assert current.number == 2

    assert delivery.record([completion(frozen, later)], db="default", now=later) == []

    row = Alarm.objects.get(pk=alarm.pk)
    assert (row.state, row.claimed_by, row.attempts) == (Alarm.State.RUNNING, WORKER_B, 2)


# -- rescue ---------------------------------------------------------------------------------


def test_rescue_takes_only_expired_leases(now):
    short = alarms.schedule("tests.ok", {"lease": "short"})
    (first,) = claim_all(WORKER_A, lease=timedelta(seconds=10))
    long = alarms.schedule("tests.ok", {"lease": "long"})
    (second,) = claim_all(WORKER_B, lease=timedelta(minutes=10))
    assert (first.alarm_id, second.alarm_id) == (short.pk, long.pk)

    assert delivery.rescue(db="default", now=T0 + timedelta(seconds=10)) == 0  # not yet
    assert delivery.rescue(db="default", now=T0 + timedelta(minutes=1)) == 1

    rescued = Alarm.objects.get(pk=short.pk)
    assert rescued.state == Alarm.State.SCHEDULED
    assert rescued.due_at == T0 + timedelta(minutes=1)
    assert rescued.claimed_by is None
    assert "LostAttempt" in rescued.last_error
    lost = Attempt.objects.get(alarm=short)
    assert (lost.number, lost.outcome) == (1, Attempt.Outcome.LOST)
    live = Alarm.objects.get(pk=long.pk)
    assert (live.state, live.claimed_by) == (Alarm.State.RUNNING, WORKER_B)
    assert not Attempt.objects.filter(alarm=long).exists()


def test_rescue_names_the_worker_that_held_the_claim(now):
    Worker.objects.create(
        id=WORKER_A,
        name="web-3:812",
        hostname="web-3",
        pid=812,
        executor="inline",
        started_at=T0,
        heartbeat_at=T0,
    )
    alarm = alarms.schedule("tests.ok")
    claim_all(WORKER_A, lease=timedelta(seconds=1))

    delivery.rescue(db="default", now=T0 + timedelta(minutes=1))

    lost = Attempt.objects.get(alarm=alarm)
    assert lost.worker == "web-3:812"
    assert "web-3:812" in lost.error


def test_rescue_twice_records_one_lost_attempt(now):
    alarms.schedule("tests.ok")
    claim_all(lease=timedelta(seconds=1))
    later = T0 + timedelta(minutes=1)

    assert delivery.rescue(db="default", now=later) == 1
    assert delivery.rescue(db="default", now=later) == 0

    assert Attempt.objects.count() == 1


def test_a_lost_attempt_of_a_cancelled_running_alarm_ends_it_cancelled(now):
    alarm = alarms.schedule("tests.ok")
    claim_all(lease=timedelta(seconds=1))
    alarms.cancel(alarm, reason="stop")

    delivery.rescue(db="default", now=T0 + timedelta(minutes=1))

    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.CANCELLED


# -- extend and release ---------------------------------------------------------------------


def test_extend_pushes_only_the_leases_this_worker_holds(now):
    mine = alarms.schedule("tests.ok")
    claim_all(WORKER_A)
    theirs = alarms.schedule("tests.ok")
    claim_all(WORKER_B)
    until = T0 + timedelta(hours=1)

    assert extend(
        db="default", worker_id=WORKER_A, ids=[mine.pk, theirs.pk], lease_until=until
    ) == {mine.pk: 1}

    assert Alarm.objects.get(pk=mine.pk).lease_until == until
    assert Alarm.objects.get(pk=theirs.pk).lease_until == T0 + LEASE


def test_release_gives_back_claims_never_started_and_is_fenced(now):
    alarm = alarms.schedule("tests.ok", {"n": 1})
    (held,) = claim_all()

    assert (
        release(db="default", claims=[dataclasses.replace(held, worker_id=WORKER_B)], now=T0) == 0
    )
    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.RUNNING
    assert release(db="default", claims=[held], now=T0) == 1

    row = Alarm.objects.get(pk=alarm.pk)
    assert (row.state, row.attempts, row.claimed_by) == (Alarm.State.SCHEDULED, 0, None)
    assert not Attempt.objects.exists()
    assert run_due(now=T0) == 1
    assert Attempt.objects.get().number == 1


# -- execute and decide ---------------------------------------------------------------------


def test_execute_never_raises_for_a_handlers_fault(now):
    alarms.schedule("tests.boom")
    (held,) = claim_all()

    result = delivery.execute(held, now=lambda: T0)

    assert result.outcome == Attempt.Outcome.ERROR
    assert result.error == "RuntimeError: boom on attempt 1"
    assert "Traceback" in result.traceback


def test_decide_has_no_side_effects(now, django_assert_num_queries):
    alarm = alarms.schedule("tests.boom")
    (held,) = claim_all()
    result = delivery.execute(held, now=lambda: T0)

    with django_assert_num_queries(0):
        decided = delivery.decide(held, result, now=T0, worker="w")

    assert decided.state == Alarm.State.SCHEDULED
    assert decided.due_at == T0 + timedelta(seconds=10)
    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.RUNNING


def test_a_timed_out_attempt_is_recorded_and_retried_with_backoff(now):
    alarm = alarms.schedule("tests.boom", timeout=2)
    (held,) = claim_all()
    result = outcomes.timed_out(held, T0, T0 + timedelta(seconds=2), 2)

    decided = delivery.decide(held, result, now=T0 + timedelta(seconds=2), worker="w")
    delivery.record([decided], db="default", now=T0 + timedelta(seconds=2))

    row = Alarm.objects.get(pk=alarm.pk)
    assert row.state == Alarm.State.SCHEDULED
    assert row.due_at == T0 + timedelta(seconds=12)
    attempt = Attempt.objects.get(alarm=alarm)
    assert attempt.outcome == Attempt.Outcome.TIMEOUT
    assert "2 s" in attempt.error


def test_a_claim_decodes_its_schedule_once_and_delivery_never_validates_it_again(now, monkeypatch):
    from django_alarms.recurrence import Recurrence

    alarm = alarms.schedule_recurring("tests.ok", every=timedelta(hours=1), start_at=T0)

    def validating(*args, **kwargs):
        raise AssertionError("the worker validated a stored schedule again")

    monkeypatch.setattr(Recurrence, "from_json", validating)
    (held,) = claim_all()
    assert held.schedule is not None
    assert held.schedule.every == timedelta(hours=1)
    to_run, _ = delivery.catch_up([held], now=T0)
    done = completion(to_run[0])
    assert done.due_at == T0 + timedelta(hours=1)
    assert len(delivery.record([done], db="default", now=T0)) == 1
    assert Alarm.objects.get(pk=alarm.pk).due_at == T0 + timedelta(hours=1)
