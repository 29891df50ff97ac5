"""The service layer, ``django_alarms.alarms``: scheduling, bad input, and changing alarms."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from django_alarms import alarms, clock, delivery
from django_alarms.claims import Claim
from django_alarms.models import Alarm, Attempt
from django_alarms.signals import alarm_cancelled, alarm_scheduled
from django_alarms.testing import run_due
from django_alarms.types import ALLOWED_FROM, CANCEL_REQUESTED_FROM, State
from tests import handlers
from tests.factories import AlarmFactory, claim

pytestmark = pytest.mark.django_db

UTC = timezone.utc
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
WORKER = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def now() -> Iterator[datetime]:
    """The service layer's clock, frozen at T0."""
    with clock.frozen(T0):
        yield T0


@pytest.fixture
def scheduled_signals() -> Iterator[list[tuple[Alarm, bool]]]:
    received: list[tuple[Alarm, bool]] = []

    def receiver(sender: type[Alarm], alarm: Alarm, created: bool, **kwargs: Any) -> None:
        received.append((alarm, created))

    alarm_scheduled.connect(receiver, sender=Alarm)
    yield received
    alarm_scheduled.disconnect(receiver, sender=Alarm)


def writes(captured: list[dict[str, str]]) -> list[str]:
    return [query["sql"] for query in captured if query["sql"].lstrip().upper().startswith(WRITES)]


def claim_one(at: datetime, *, lease: timedelta = timedelta(minutes=5)) -> Claim:
    """Claim the one alarm due at ``at`` as a worker would."""
    (held,) = claim(db="default", worker_id=WORKER, now=at, lease_until=at + lease)
    return held


def finish(held: Claim, at: datetime) -> None:
    """Run and record a claimed attempt the way every executor does."""
    result = delivery.execute(held, now=lambda: at)
    completion = delivery.decide(held, result, now=at, worker="worker-a")
    assert delivery.record([completion], db="default", now=at) == [completion]


def exhaust(alarm: Alarm, at: datetime) -> Alarm:
    """Deliver a ``tests.boom`` alarm until it fails for good."""
    moment = at
    for _ in range(alarm.max_attempts):
        assert run_due(now=moment) == 1
        alarm.refresh_from_db()
        moment = alarm.due_at
    assert alarm.state == Alarm.State.FAILED
    return alarm


# -- when -----------------------------------------------------------------------------------


def test_schedule_at_writes_a_scheduled_alarm_due_then(now):
    at = T0 + timedelta(hours=2)

    alarm = alarms.schedule("tests.ok", {"account": 7}, at=at, key="acc-7", name="reminder")

    alarm = Alarm.objects.get(pk=alarm.pk)
    assert (alarm.handler, alarm.key, alarm.name) == ("tests.ok", "acc-7", "reminder")
    assert alarm.payload == {"account": 7}
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == at
    assert alarm.attempts == 0
    assert alarm.created_at == T0


def test_schedule_at_keeps_the_instant_of_any_time_zone(now):
    paris = datetime(2031, 3, 3, 11, 30, tzinfo=timezone(timedelta(hours=1)))

    alarm = alarms.schedule("tests.ok", at=paris)

    assert Alarm.objects.get(pk=alarm.pk).due_at == datetime(2031, 3, 3, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "delay",
    [timedelta(minutes=5), 300, 300.0],
    ids=["timedelta", "int-seconds", "float-seconds"],
)
def test_schedule_delay_is_counted_from_now(now, delay):
    alarm = alarms.schedule("tests.ok", delay=delay)

    assert Alarm.objects.get(pk=alarm.pk).due_at == T0 + timedelta(minutes=5)


def test_schedule_with_neither_at_nor_delay_is_due_now(now, delivered):
    alarm = alarms.schedule("tests.ok", {"n": 1})

    assert alarm.due_at == T0
    assert run_due(now=T0) == 1
    assert [context.id for context in delivered] == [alarm.id]


def test_an_alarm_is_not_delivered_before_it_is_due(now, delivered):
    alarms.schedule("tests.ok", delay=timedelta(hours=1))

    assert run_due(now=T0 + timedelta(hours=1) - timedelta(microseconds=1)) == 0
    assert delivered == []
    assert run_due(now=T0 + timedelta(hours=1)) == 1


def test_a_past_at_is_due_at_once(now, delivered):
    alarm = alarms.schedule("tests.ok", at=T0 - timedelta(days=3))

    assert run_due(now=T0) == 1
    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SUCCEEDED
    assert delivered[0].due_at == T0 - timedelta(days=3)


@pytest.mark.parametrize(
    "handler",
    [pytest.param("tests.ok", id="by-name"), pytest.param(handlers.ok, id="by-function")],
)
def test_schedule_takes_a_handler_by_name_or_decorated_function(now, delivered, handler):
    alarm = alarms.schedule(handler, {"n": 1})

    assert alarm.handler == "tests.ok"
    assert run_due(now=T0) == 1
    assert delivered[0].handler == "tests.ok"


# -- idempotency ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "idempotency_key",
    [
        pytest.param(uuid.UUID("6d4bc6a4-03c6-4f11-9d61-1b2b8e5f0a42"), id="uuid"),
        pytest.param("6d4bc6a4-03c6-4f11-9d61-1b2b8e5f0a42", id="uuid-string"),
        pytest.param("order-42-reminder", id="any-string"),
    ],
)
def test_scheduling_an_existing_id_returns_it_and_writes_nothing(
    now, django_assert_max_num_queries, scheduled_signals, idempotency_key
):
    first = alarms.schedule("tests.ok", {"v": 1}, delay=60, id=idempotency_key)

    # A savepoint, the lookup by primary key, its release.
    with django_assert_max_num_queries(3) as queries:
        again = alarms.schedule("tests.ok", {"v": 2}, delay=3600, id=idempotency_key)

    assert writes(queries.captured_queries) == []
    assert again.pk == first.pk
    assert Alarm.objects.count() == 1
    stored = Alarm.objects.get()
    assert (stored.payload, stored.due_at) == ({"v": 1}, T0 + timedelta(seconds=60))
    assert len(scheduled_signals) == 1


def test_a_uuid_and_its_string_are_the_same_idempotency_key(now):
    key = uuid.uuid4()

    first = alarms.schedule("tests.ok", id=key)
    second = alarms.schedule("tests.ok", id=str(key))

    assert first.pk == second.pk == key
    assert Alarm.objects.count() == 1


def test_different_string_ids_are_different_alarms(now):
    first = alarms.schedule("tests.ok", id="order-1")
    second = alarms.schedule("tests.ok", id="order-2")
    again = alarms.schedule("tests.ok", id="order-1")

    assert first.pk != second.pk
    assert again.pk == first.pk
    assert Alarm.objects.count() == 2


def test_an_id_of_an_ended_alarm_still_returns_it(now):
    first = alarms.schedule("tests.ok", id="once-only")
    run_due(now=T0)

    again = alarms.schedule("tests.ok", id="once-only")

    assert again.pk == first.pk
    assert again.state == Alarm.State.SUCCEEDED
    assert Alarm.objects.count() == 1


# -- (key, name) ----------------------------------------------------------------------------


def test_an_active_key_and_name_clash_raises_alarm_exists_by_default(now):
    first = alarms.schedule("tests.ok", key="acc-7", name="reminder")

    with pytest.raises(alarms.AlarmExists) as raised:
        alarms.schedule("tests.ok", key="acc-7", name="reminder")

    assert raised.value.existing.pk == first.pk
    assert "acc-7" in str(raised.value)
    assert "reminder" in str(raised.value)
    assert Alarm.objects.count() == 1


def test_if_exists_ignore_returns_the_existing_alarm_unchanged(now, django_assert_max_num_queries):
    first = alarms.schedule("tests.ok", {"v": 1}, delay=60, key="acc-7", name="reminder")

    with django_assert_max_num_queries(3) as queries:
        again = alarms.schedule(
            "tests.ok", {"v": 2}, delay=3600, key="acc-7", name="reminder", if_exists="ignore"
        )

    assert writes(queries.captured_queries) == []
    assert again.pk == first.pk
    stored = Alarm.objects.get()
    assert (stored.payload, stored.due_at) == ({"v": 1}, T0 + timedelta(seconds=60))


def test_if_exists_replace_moves_the_existing_alarm_to_the_new_time_and_payload(
    now, scheduled_signals
):
    first = alarms.schedule("tests.ok", {"v": 1}, delay=60, key="acc-7", name="reminder")

    again = alarms.schedule(
        "tests.ok", {"v": 2}, delay=3600, key="acc-7", name="reminder", if_exists="replace"
    )

    assert again.pk == first.pk
    assert Alarm.objects.count() == 1
    stored = Alarm.objects.get()
    assert stored.payload == {"v": 2}
    assert stored.due_at == T0 + timedelta(hours=1)
    assert stored.state == Alarm.State.SCHEDULED
    assert [created for _, created in scheduled_signals] == [True, False]


def test_replace_of_a_key_and_name_delivers_only_the_new_payload(now, delivered):
    alarms.schedule("tests.ok", {"v": 1}, key="k", name="n")
    alarms.schedule("tests.ok", {"v": 2}, delay=60, key="k", name="n", if_exists="replace")

    assert run_due(now=T0) == 0
    assert run_due(now=T0 + timedelta(seconds=60)) == 1
    assert [context.payload for context in delivered] == [{"v": 2}]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("k", ""), ("k", ""), id="empty-name-same-key"),
        pytest.param(("", ""), ("", ""), id="empty-key-and-name"),
        pytest.param(("k", "a"), ("k", "b"), id="other-name"),
        pytest.param(("k1", "a"), ("k2", "a"), id="other-key"),
    ],
)
def test_alarms_that_do_not_share_a_non_empty_key_and_name_never_clash(now, first, second):
    alarms.schedule("tests.ok", key=first[0], name=first[1])
    alarms.schedule("tests.ok", key=second[0], name=second[1])

    assert Alarm.objects.count() == 2


def test_a_key_and_name_is_free_again_once_its_alarm_ended(now):
    first = alarms.schedule("tests.ok", key="k", name="n")
    run_due(now=T0)

    second = alarms.schedule("tests.ok", key="k", name="n")

    assert second.pk != first.pk
    assert Alarm.objects.count() == 2


def test_a_paused_alarm_holds_its_key_and_name(now):
    alarms.pause(alarms.schedule("tests.ok", key="k", name="n"))

    with pytest.raises(alarms.AlarmExists):
        alarms.schedule("tests.ok", key="k", name="n")


# -- attempt budget and time limit ----------------------------------------------------------


def test_max_attempts_defaults_to_the_handlers(now):
    assert alarms.schedule("tests.limited").max_attempts == 2


@override_settings(ALARMS={"MAX_ATTEMPTS": 9})
def test_max_attempts_defaults_to_the_setting_when_the_handler_sets_none(now):
    assert alarms.schedule("tests.ok").max_attempts == 9


def test_max_attempts_given_wins_over_the_handlers(now):
    assert alarms.schedule("tests.limited", max_attempts=4).max_attempts == 4


@pytest.mark.parametrize(
    ("handler", "timeout", "settings", "expected"),
    [
        pytest.param("tests.limited", None, {}, 7.0, id="handler"),
        pytest.param("tests.ok", None, {"TIMEOUT": 42}, 42.0, id="setting"),
        pytest.param("tests.ok", None, {}, 300.0, id="default-setting"),
        pytest.param("tests.limited", timedelta(seconds=3), {}, 3.0, id="given-timedelta"),
        pytest.param("tests.limited", 2.5, {}, 2.5, id="given-seconds"),
    ],
)
def test_the_time_limit_of_an_attempt_is_the_alarms_then_the_handlers_then_the_setting(
    now, handler, timeout, settings, expected
):
    with override_settings(ALARMS=settings):
        alarm = alarms.schedule(handler, timeout=timeout)
        held = claim_one(T0)

        assert held.alarm_id == alarm.pk
        assert delivery.timeout_for(held) == expected


# -- the caller's transaction ---------------------------------------------------------------


class Rollback(Exception):
    pass


def schedule_a_batch() -> None:
    with alarms.batch():
        alarms.schedule("tests.ok", {"n": 1})
        alarms.schedule("tests.ok", key="k", name="n")


SCHEDULERS = {
    "plain": lambda: alarms.schedule("tests.ok", {"n": 1}),
    "key-and-name": lambda: alarms.schedule("tests.ok", key="k", name="n"),
    "idempotent-id": lambda: alarms.schedule("tests.ok", id="order-1"),
    "recurring": lambda: alarms.schedule_recurring("tests.ok", every=60, key="k", name="r"),
    "many": lambda: alarms.schedule_many([alarms.Spec("tests.ok"), alarms.Spec("tests.ok")]),
    "batch": schedule_a_batch,
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheduler", list(SCHEDULERS), ids=list(SCHEDULERS))
def test_scheduling_joins_the_callers_transaction(scheduler):
    def view() -> None:
        with transaction.atomic():
            SCHEDULERS[scheduler]()
            assert Alarm.objects.exists()
            raise Rollback

    with pytest.raises(Rollback):
        view()

    assert Alarm.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_scheduling_outside_a_transaction_is_committed():
    def view() -> None:
        with transaction.atomic():
            alarms.schedule("tests.ok")
            raise Rollback

    alarms.schedule("tests.ok")
    with pytest.raises(Rollback):
        view()

    assert Alarm.objects.count() == 1


def test_schedule_sends_alarm_scheduled_with_the_new_alarm(now, scheduled_signals):
    alarm = alarms.schedule("tests.ok", {"n": 1})

    assert len(scheduled_signals) == 1
    sent, created = scheduled_signals[0]
    assert created is True
    assert sent.pk == alarm.pk
    assert sent.payload == {"n": 1}


# -- bad input ------------------------------------------------------------------------------


def not_a_handler(alarm: alarms.AlarmContext) -> None:
    """Never decorated."""


NAIVE = datetime(2031, 3, 3, 9, 0)
CIRCULAR: dict[str, object] = {"name": "loop"}
CIRCULAR["self"] = CIRCULAR
LATER = T0 + timedelta(hours=1)

# (schedule() keyword arguments, the field the message names, the values it shows)
BAD_INPUT = [
    pytest.param({"at": LATER, "delay": 60}, "at", [LATER, 60], id="at-and-delay"),
    pytest.param(
        {"at": LATER, "delay": timedelta(0)}, "at", [LATER, timedelta(0)], id="at-and-zero-delay"
    ),
    pytest.param({"at": NAIVE}, "at", [NAIVE], id="naive-at"),
    pytest.param({"at": "2031-03-03T09:00Z"}, "at", ["2031-03-03T09:00Z"], id="at-not-datetime"),
    pytest.param({"delay": -1}, "delay", [-1], id="negative-delay-seconds"),
    pytest.param(
        {"delay": timedelta(seconds=-1)}, "delay", [timedelta(seconds=-1)], id="negative-delay"
    ),
    pytest.param({"delay": "60"}, "delay", ["60"], id="delay-string"),
    pytest.param({"delay": True}, "delay", [True], id="delay-bool"),
    pytest.param({"delay": math.nan}, "delay", [math.nan], id="delay-nan"),
    pytest.param({"delay": math.inf}, "delay", [math.inf], id="delay-inf"),
    pytest.param({"delay": 1e15}, "delay", [1e15], id="delay-too-large"),
    pytest.param({"delay": timedelta.max}, "delay", [timedelta.max], id="delay-past-year-9999"),
    pytest.param({"handler": "nope"}, "handler", ["nope"], id="unknown-handler"),
    pytest.param({"handler": not_a_handler}, "handler", [not_a_handler], id="undecorated-function"),
    pytest.param({"payload": object()}, "payload", [], id="payload-object"),
    pytest.param({"payload": {1, 2}}, "payload", [{1, 2}], id="payload-set"),
    pytest.param({"payload": {"x": math.nan}}, "payload", [{"x": math.nan}], id="payload-nan"),
    pytest.param({"payload": {"x": math.inf}}, "payload", [{"x": math.inf}], id="payload-inf"),
    pytest.param({"payload": CIRCULAR}, "payload", ["contains itself"], id="payload-circular"),
    pytest.param({"max_attempts": 0}, "max_attempts", [0], id="max-attempts-zero"),
    pytest.param({"max_attempts": -2}, "max_attempts", [-2], id="max-attempts-negative"),
    pytest.param({"max_attempts": True}, "max_attempts", [True], id="max-attempts-bool"),
    pytest.param({"max_attempts": 2.5}, "max_attempts", [2.5], id="max-attempts-float"),
    pytest.param({"timeout": 0}, "timeout", [0], id="timeout-zero"),
    pytest.param({"timeout": -5}, "timeout", [-5], id="timeout-negative"),
    pytest.param({"timeout": timedelta(0)}, "timeout", [timedelta(0)], id="timeout-zero-timedelta"),
    pytest.param({"timeout": True}, "timeout", [True], id="timeout-bool"),
    pytest.param({"timeout": "30"}, "timeout", ["30"], id="timeout-string"),
    pytest.param({"timeout": math.nan}, "timeout", [math.nan], id="timeout-nan"),
    pytest.param({"timeout": math.inf}, "timeout", [math.inf], id="timeout-inf"),
    pytest.param({"timeout": 1e15}, "timeout", [1e15], id="timeout-too-large"),
    pytest.param({"key": "k" * 201}, "key", ["k" * 201], id="key-too-long"),
    pytest.param({"name": "n" * 201}, "name", ["n" * 201], id="name-too-long"),
    pytest.param({"key": 7}, "key", [7], id="key-not-string"),
    pytest.param({"if_exists": "overwrite"}, "if_exists", ["overwrite"], id="bad-if-exists"),
    pytest.param({"id": ""}, "id", [""], id="empty-id"),
    pytest.param({"id": 42}, "id", [42], id="id-not-string"),
    pytest.param(
        {"handler": "tests.validated", "payload": {"account": "seven"}},
        "payload",
        [{"account": "seven"}, "an integer 'account' is required"],
        id="validate-rejects",
    ),
]


def call_schedule(kwargs: dict[str, Any]) -> Alarm:
    kwargs = dict(kwargs)
    return alarms.schedule(kwargs.pop("handler", "tests.ok"), kwargs.pop("payload", None), **kwargs)


def assert_names(exc: alarms.InvalidAlarm, field: str, values: list[Any]) -> None:
    message = str(exc)
    assert isinstance(exc, ValueError)
    assert f"{field}=" in message
    for value in values:
        assert (value if isinstance(value, str) else repr(value)) in message


@pytest.mark.parametrize(("kwargs", "field", "values"), BAD_INPUT)
def test_bad_input_is_rejected_before_anything_is_written(now, kwargs, field, values):
    with pytest.raises(alarms.InvalidAlarm) as raised:
        call_schedule(kwargs)

    assert_names(raised.value, field, values)
    assert Alarm.objects.count() == 0


@pytest.mark.parametrize("handler", ["nope", not_a_handler], ids=["name", "function"])
def test_an_unknown_handler_raises_unknown_handler(now, handler):
    with pytest.raises(alarms.UnknownHandler) as raised:
        alarms.schedule(handler)

    assert isinstance(raised.value, alarms.InvalidAlarm)
    assert Alarm.objects.count() == 0


@pytest.mark.parametrize(("kwargs", "field", "values"), BAD_INPUT)
def test_one_bad_alarm_in_a_batch_means_none_is_written(now, kwargs, field, values):
    def schedule_three() -> None:
        with alarms.batch():
            alarms.schedule("tests.ok", {"first": True})
            alarms.schedule("tests.ok", key="k", name="n")
            call_schedule(kwargs)

    with pytest.raises(alarms.InvalidAlarm) as raised:
        schedule_three()

    assert_names(raised.value, field, values)
    assert Alarm.objects.count() == 0


@pytest.mark.parametrize(("kwargs", "field", "values"), BAD_INPUT)
def test_one_bad_spec_in_schedule_many_means_none_is_written(now, kwargs, field, values):
    kwargs = dict(kwargs)
    bad = alarms.Spec(kwargs.pop("handler", "tests.ok"), kwargs.pop("payload", None), **kwargs)

    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.schedule_many([alarms.Spec("tests.ok"), alarms.Spec("tests.ok", id="x"), bad])

    assert str(raised.value).startswith("specs[2]")
    assert_names(raised.value, field, values)
    assert Alarm.objects.count() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cron": "61 * * * *"}, id="invalid-cron"),
        pytest.param({"every": timedelta(0)}, id="zero-every"),
        pytest.param({"every": -60}, id="negative-every"),
        pytest.param({"every": 60, "cron": "* * * * *"}, id="every-and-cron"),
        pytest.param({}, id="no-schedule"),
        pytest.param({"every": 60, "start_at": LATER, "end_at": T0}, id="end-before-start"),
        pytest.param({"every": 60, "misfire": "sometimes"}, id="bad-misfire"),
        pytest.param({"every": 60, "timezone": "Mars/Olympus"}, id="bad-timezone"),
        pytest.param({"every": 60, "max_attempts": 0}, id="max-attempts"),
    ],
)
def test_bad_recurring_input_is_rejected_before_anything_is_written(now, kwargs):
    with pytest.raises(alarms.InvalidAlarm):
        alarms.schedule_recurring("tests.ok", **kwargs)

    assert Alarm.objects.count() == 0


# -- batch ----------------------------------------------------------------------------------


def test_a_batch_writes_all_its_alarms(now):
    with alarms.batch():
        first = alarms.schedule("tests.ok", {"n": 1})
        second = alarms.schedule("tests.ok", {"n": 2}, key="k", name="n")

    assert set(Alarm.objects.values_list("pk", flat=True)) == {first.pk, second.pk}


def test_a_clash_in_a_batch_means_none_is_written(now):
    alarms.schedule("tests.ok", key="k", name="n")

    def schedule_two() -> None:
        with alarms.batch():
            alarms.schedule("tests.ok", {"n": 1})
            alarms.schedule("tests.ok", key="k", name="n")

    with pytest.raises(alarms.AlarmExists):
        schedule_two()

    assert Alarm.objects.count() == 1


# -- schedule_many --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "with_identity",
    [pytest.param(False, id="plain"), pytest.param(True, id="with-ids-keys-and-names")],
)
def test_schedule_many_writes_ten_thousand_alarms_in_a_bounded_handful_of_queries(
    now, django_assert_max_num_queries, with_identity
):
    count = 10_000
    specs = [
        alarms.Spec(
            "tests.ok",
            {"n": n},
            delay=n,
            id=f"order-{n}" if with_identity else None,
            key=f"acc-{n}" if with_identity else "",
            name="reminder" if with_identity else "",
        )
        for n in range(count)
    ]

    # The bound does not grow with the number of specs: a savepoint and its release, at most
    # one SELECT for the given ids and one for the (key, name) pairs, and the INSERTs in
    # batches of 1,000 rows (10 for 10,000 specs) -> 14 at most; 15 leaves one query of slack.
    with django_assert_max_num_queries(15):
        scheduled = alarms.schedule_many(specs)

    assert [alarm.payload["n"] for alarm in scheduled] == list(range(count))
    assert Alarm.objects.count() == count
    assert Alarm.objects.get(payload__n=1234).due_at == T0 + timedelta(seconds=1234)


def test_schedule_many_returns_the_alarms_in_the_order_of_the_specs(now):
    specs = [alarms.Spec("tests.ok", {"n": n}, at=T0 + timedelta(minutes=10 - n)) for n in range(5)]

    scheduled = alarms.schedule_many(specs)

    assert [alarm.payload for alarm in scheduled] == [{"n": n} for n in range(5)]
    stored = {alarm.pk: alarm for alarm in Alarm.objects.all()}
    assert [stored[alarm.pk].due_at for alarm in scheduled] == [
        T0 + timedelta(minutes=10 - n) for n in range(5)
    ]


def test_schedule_many_applies_idempotent_ids_and_key_and_name_rules(now):
    existing_id = alarms.schedule("tests.ok", {"v": "old"}, id="order-1")
    ignored = alarms.schedule("tests.ok", {"v": "old"}, key="k", name="ignore-me")
    replaced = alarms.schedule("tests.ok", {"v": "old"}, key="k", name="replace-me")

    scheduled = alarms.schedule_many(
        [
            alarms.Spec("tests.ok", {"v": "new"}, id="order-1"),
            alarms.Spec("tests.ok", {"v": "new"}, key="k", name="ignore-me", if_exists="ignore"),
            alarms.Spec(
                "tests.ok", {"v": "new"}, delay=60, key="k", name="replace-me", if_exists="replace"
            ),
            alarms.Spec("tests.ok", {"v": "new"}, key="k", name="fresh"),
        ]
    )

    assert [alarm.pk for alarm in scheduled[:3]] == [existing_id.pk, ignored.pk, replaced.pk]
    assert Alarm.objects.count() == 4
    assert Alarm.objects.get(pk=existing_id.pk).payload == {"v": "old"}
    assert Alarm.objects.get(pk=ignored.pk).payload == {"v": "old"}
    moved = Alarm.objects.get(pk=replaced.pk)
    assert (moved.payload, moved.due_at) == ({"v": "new"}, T0 + timedelta(seconds=60))
    assert Alarm.objects.get(pk=scheduled[3].pk).name == "fresh"


def test_schedule_many_with_a_clashing_key_and_name_writes_nothing(now):
    alarms.schedule("tests.ok", key="k", name="n")

    with pytest.raises(alarms.AlarmExists) as raised:
        alarms.schedule_many([alarms.Spec("tests.ok"), alarms.Spec("tests.ok", key="k", name="n")])

    assert str(raised.value).startswith("specs[1]")
    assert raised.value.existing.name == "n"
    assert Alarm.objects.count() == 1


@pytest.mark.parametrize(
    ("specs", "prefix"),
    [
        pytest.param(
            [
                alarms.Spec("tests.ok", id="a"),
                alarms.Spec("tests.ok"),
                alarms.Spec("tests.ok", id="a"),
            ],
            "specs[2].id",
            id="same-id",
        ),
        pytest.param(
            [
                alarms.Spec("tests.ok", key="k", name="n"),
                alarms.Spec("tests.ok", key="k", name="n"),
            ],
            "specs[1].name",
            id="same-key-and-name",
        ),
    ],
)
def test_schedule_many_rejects_duplicates_inside_one_call(now, specs, prefix):
    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.schedule_many(specs)

    assert str(raised.value).startswith(prefix)
    assert Alarm.objects.count() == 0


def test_schedule_many_rejects_what_is_not_a_spec(now):
    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.schedule_many([alarms.Spec("tests.ok"), {"handler": "tests.ok"}])

    assert str(raised.value).startswith("specs[1]")
    assert Alarm.objects.count() == 0


def test_schedule_many_keeps_the_unknown_handler_error_type(now):
    with pytest.raises(alarms.UnknownHandler) as raised:
        alarms.schedule_many([alarms.Spec("tests.ok"), alarms.Spec("nope")])

    assert str(raised.value).startswith("specs[1]")
    assert "'nope'" in str(raised.value)


def test_schedule_many_sends_alarm_scheduled_for_each_new_alarm(now, scheduled_signals):
    scheduled = alarms.schedule_many([alarms.Spec("tests.ok", {"n": n}) for n in range(3)])

    assert [(alarm.pk, created) for alarm, created in scheduled_signals] == [
        (alarm.pk, True) for alarm in scheduled
    ]


# -- which states allow which operation ------------------------------------------------------

OPERATIONS = {
    "cancel": alarms.cancel,
    "retry": alarms.retry,
    "run_now": alarms.run_now,
    "reschedule": lambda alarm: alarms.reschedule(alarm, delay=60),
    "pause": alarms.pause,
    "resume": alarms.resume,
}


def test_the_table_names_every_operation_that_changes_a_state():
    assert set(ALLOWED_FROM) == set(OPERATIONS)


@pytest.mark.parametrize(
    ("operation", "state"),
    [(operation, state) for operation in ALLOWED_FROM for state in State],
)
def test_each_operation_is_allowed_exactly_from_the_states_of_the_table(now, operation, state):
    alarm = AlarmFactory(state=state, due_at=T0 + timedelta(hours=1))
    if state in ALLOWED_FROM[operation]:
        OPERATIONS[operation](alarm)
        assert Alarm.objects.get(pk=alarm.pk).updated_at == T0
    elif operation == "cancel" and state in (*CANCEL_REQUESTED_FROM, State.CANCELLED):
        # Asked of a running alarm (it ends cancelled), nothing to do for a cancelled one.
        assert alarms.cancel(alarm) == (state in CANCEL_REQUESTED_FROM)
    else:
        with pytest.raises(alarms.InvalidTransition) as refused:
            OPERATIONS[operation](alarm)
        allowed = (*ALLOWED_FROM[operation], *(CANCEL_REQUESTED_FROM * (operation == "cancel")))
        assert str(refused.value).endswith(
            f"it is {state} (only {' or '.join(allowed)} alarms can be)"
        )
        assert Alarm.objects.get(pk=alarm.pk).state == state


# -- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(lambda alarm: alarm, id="alarm"),
        pytest.param(lambda alarm: alarm.pk, id="uuid"),
        pytest.param(lambda alarm: str(alarm.pk), id="id-string"),
    ],
)
def test_cancel_one_alarm_stores_the_reason_and_is_never_delivered(now, delivered, ref):
    alarm = alarms.schedule("tests.ok")
    sent: list[tuple[Alarm, str]] = []

    def receiver(sender: type[Alarm], alarm: Alarm, reason: str, **kwargs: Any) -> None:
        sent.append((alarm, reason))

    alarm_cancelled.connect(receiver, sender=Alarm)
    try:
        assert alarms.cancel(ref(alarm), reason="customer left") == 1
    finally:
        alarm_cancelled.disconnect(receiver, sender=Alarm)

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.CANCELLED
    assert alarm.cancel_reason == "customer left"
    assert alarm.finished_at == T0
    assert [(row.pk, reason) for row, reason in sent] == [(alarm.pk, "customer left")]
    assert run_due(now=T0 + timedelta(days=1)) == 0
    assert delivered == []


def test_cancel_by_key_cancels_every_active_alarm_with_that_key(now):
    first = alarms.schedule("tests.ok", key="acc-7", name="reminder", delay=60)
    second = alarms.schedule("tests.ok", key="acc-7", name="invoice", delay=60)
    unnamed = alarms.schedule("tests.ok", key="acc-7", delay=60)
    other = alarms.schedule("tests.ok", key="acc-8", name="reminder", delay=60)
    done = alarms.schedule("tests.ok", key="acc-7", name="welcome")
    run_due(now=T0)

    assert alarms.cancel(key="acc-7", reason="account closed") == 3

    states = dict(Alarm.objects.values_list("pk", "state"))
    assert states[first.pk] == states[second.pk] == states[unnamed.pk] == "cancelled"
    assert states[other.pk] == "scheduled"
    assert states[done.pk] == "succeeded"
    assert set(Alarm.objects.filter(state="cancelled").values_list("cancel_reason", flat=True)) == {
        "account closed"
    }


def test_cancel_by_key_and_name_cancels_only_that_alarm(now):
    reminder = alarms.schedule("tests.ok", key="acc-7", name="reminder")
    invoice = alarms.schedule("tests.ok", key="acc-7", name="invoice")

    assert alarms.cancel(key="acc-7", name="reminder") == 1

    assert Alarm.objects.get(pk=reminder.pk).state == Alarm.State.CANCELLED
    assert Alarm.objects.get(pk=invoice.pk).state == Alarm.State.SCHEDULED


def test_cancel_by_an_unknown_key_cancels_nothing(now):
    alarms.schedule("tests.ok", key="acc-7")

    assert alarms.cancel(key="acc-8") == 0
    assert Alarm.objects.get().state == Alarm.State.SCHEDULED


@pytest.mark.parametrize("state", ["failed", "paused"])
def test_cancel_takes_failed_and_paused_alarms(now, state):
    alarm = alarms.schedule("tests.boom", max_attempts=1)
    if state == "failed":
        run_due(now=T0)
    else:
        alarms.pause(alarm)
    assert Alarm.objects.get(pk=alarm.pk).state == state

    assert alarms.cancel(alarm) == 1

    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.CANCELLED


def test_cancel_refuses_a_succeeded_alarm(now):
    alarm = alarms.schedule("tests.ok")
    run_due(now=T0)

    with pytest.raises(alarms.InvalidTransition):
        alarms.cancel(alarm)

    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.SUCCEEDED


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="neither"),
        pytest.param({"alarm": uuid.uuid4(), "key": "k"}, id="alarm-and-key"),
        pytest.param({"name": "n"}, id="name-without-key"),
        pytest.param({"alarm": "not-a-uuid"}, id="bad-id"),
        pytest.param({"alarm": uuid.uuid4()}, id="no-such-alarm"),
        pytest.param({"key": "k", "reason": "r" * 256}, id="reason-too-long"),
    ],
)
def test_cancel_rejects_bad_arguments(now, kwargs):
    alarm = alarms.schedule("tests.ok", key="k", name="n")

    with pytest.raises(alarms.InvalidAlarm):
        alarms.cancel(**kwargs)

    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.SCHEDULED


@pytest.mark.parametrize(
    ("handler", "recurring"),
    [
        pytest.param("tests.boom", False, id="failing-one-off"),
        pytest.param("tests.ok", True, id="recurring"),
    ],
)
def test_cancelling_a_running_alarm_ends_it_cancelled_after_its_attempt(now, handler, recurring):
    if recurring:
        alarm = alarms.schedule_recurring(handler, every=timedelta(minutes=10))
    else:
        alarm = alarms.schedule(handler)
    held = claim_one(T0)

    assert alarms.cancel(alarm, reason="stop it") == 1
    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.RUNNING
    assert alarm.cancel_requested is True

    finish(held, T0 + timedelta(seconds=1))

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.CANCELLED
    assert alarm.cancel_reason == "stop it"
    assert alarm.finished_at == T0 + timedelta(seconds=1)
    assert Attempt.objects.filter(alarm=alarm).count() == 1
    assert run_due(now=T0 + timedelta(days=1)) == 0


def test_cancel_by_key_counts_a_running_alarm(now):
    alarms.schedule("tests.ok", key="k", name="running")
    claim_one(T0)
    alarms.schedule("tests.ok", key="k", name="waiting", delay=60)

    assert alarms.cancel(key="k") == 2

    assert dict(Alarm.objects.values_list("name", "cancel_requested")) == {
        "running": True,
        "waiting": False,
    }


# -- retry ----------------------------------------------------------------------------------


def test_retry_puts_a_failed_alarm_back_due_now_with_a_fresh_budget(now, delivered):
    alarm = exhaust(alarms.schedule("tests.boom"), T0)
    assert alarm.attempts == 3

    later = T0 + timedelta(days=1)
    with clock.frozen(later):
        alarms.retry(alarm)

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == later
    assert alarm.budget_start == alarm.attempts == 3
    assert alarm.finished_at is None
    delivered.clear()
    assert run_due(now=later) == 1
    assert delivered[0].attempt == 1
    numbers = list(
        Attempt.objects.filter(alarm=alarm).order_by("number").values_list("number", flat=True)
    )
    assert numbers == [1, 2, 3, 4]


def test_retry_puts_a_cancelled_alarm_back(now, delivered):
    alarm = alarms.schedule("tests.ok", delay=3600)
    alarms.cancel(alarm, reason="oops")

    alarms.retry(str(alarm.pk))

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == T0
    assert alarm.cancel_reason == ""
    assert run_due(now=T0) == 1


@pytest.mark.parametrize("state", ["scheduled", "running", "succeeded", "paused"])
def test_retry_refuses_an_alarm_that_is_neither_failed_nor_cancelled(now, state):
    alarm = alarms.schedule("tests.ok")
    if state == "running":
        claim_one(T0)
    elif state == "succeeded":
        run_due(now=T0)
    elif state == "paused":
        alarms.pause(alarm)

    with pytest.raises(alarms.InvalidTransition):
        alarms.retry(alarm)

    assert Alarm.objects.get(pk=alarm.pk).state == state


def test_retry_refuses_when_another_active_alarm_holds_the_key_and_name(now):
    old = alarms.schedule("tests.ok", key="k", name="n")
    alarms.cancel(old)
    new = alarms.schedule("tests.ok", key="k", name="n")

    with pytest.raises(alarms.AlarmExists) as raised:
        alarms.retry(old)

    assert raised.value.existing.pk == new.pk
    assert Alarm.objects.get(pk=old.pk).state == Alarm.State.CANCELLED


# -- run_now --------------------------------------------------------------------------------


def test_run_now_makes_a_scheduled_alarm_due_now(now, delivered):
    alarm = alarms.schedule("tests.ok", delay=timedelta(days=1))
    later = T0 + timedelta(minutes=1)

    with clock.frozen(later):
        alarms.run_now(alarm)

    assert Alarm.objects.get(pk=alarm.pk).due_at == later
    assert run_due(now=later) == 1
    assert [context.id for context in delivered] == [alarm.pk]


@pytest.mark.parametrize("state", ["cancelled", "paused", "succeeded"])
def test_run_now_refuses_an_alarm_that_is_not_scheduled(now, state):
    alarm = alarms.schedule("tests.ok")
    if state == "cancelled":
        alarms.cancel(alarm)
    elif state == "paused":
        alarms.pause(alarm)
    else:
        run_due(now=T0)

    with pytest.raises(alarms.InvalidTransition):
        alarms.run_now(alarm)


# -- reschedule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"at": T0 + timedelta(hours=3)}, T0 + timedelta(hours=3), id="at"),
        pytest.param({"at": T0 - timedelta(hours=3)}, T0 - timedelta(hours=3), id="past-at"),
        pytest.param({"delay": timedelta(minutes=2)}, T0 + timedelta(minutes=2), id="delay"),
        pytest.param({"delay": 90}, T0 + timedelta(seconds=90), id="delay-seconds"),
    ],
)
def test_reschedule_moves_a_scheduled_alarm(now, kwargs, expected):
    alarm = alarms.schedule("tests.ok", delay=timedelta(days=1))

    alarms.reschedule(alarm, **kwargs)

    alarm.refresh_from_db()
    assert alarm.due_at == expected
    assert alarm.state == Alarm.State.SCHEDULED


def test_reschedule_keeps_a_paused_alarm_paused(now):
    alarm = alarms.schedule("tests.ok", delay=60)
    alarms.pause(alarm)

    alarms.reschedule(alarm, delay=120)

    alarm.refresh_from_db()
    assert (alarm.state, alarm.due_at) == (Alarm.State.PAUSED, T0 + timedelta(seconds=120))


def test_reschedule_puts_a_failed_alarm_back_with_a_fresh_budget(now, delivered):
    alarm = exhaust(alarms.schedule("tests.boom"), T0)
    at = T0 + timedelta(days=2)

    alarms.reschedule(alarm, at=at)

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == at
    assert alarm.budget_start == alarm.attempts == 3
    delivered.clear()
    assert run_due(now=at) == 1
    assert delivered[0].attempt == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({}, "at", id="neither"),
        pytest.param({"at": LATER, "delay": 60}, "at", id="both"),
        pytest.param({"at": NAIVE}, "at", id="naive-at"),
        pytest.param({"delay": -60}, "delay", id="negative-delay"),
        pytest.param({"delay": "soon"}, "delay", id="delay-string"),
    ],
)
def test_reschedule_rejects_bad_times(now, kwargs, field):
    alarm = alarms.schedule("tests.ok", delay=60)

    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.reschedule(alarm, **kwargs)

    assert f"{field}=" in str(raised.value)
    assert Alarm.objects.get(pk=alarm.pk).due_at == T0 + timedelta(seconds=60)


@pytest.mark.parametrize("state", ["running", "succeeded"])
def test_reschedule_refuses_running_and_succeeded_alarms(now, state):
    alarm = alarms.schedule("tests.ok")
    if state == "running":
        claim_one(T0)
    else:
        run_due(now=T0)

    with pytest.raises(alarms.InvalidTransition):
        alarms.reschedule(alarm, delay=60)

    assert Alarm.objects.get(pk=alarm.pk).state == state


def test_reschedule_of_a_cancelled_alarm_checks_its_key_and_name(now):
    old = alarms.schedule("tests.ok", key="k", name="n")
    alarms.cancel(old)
    alarms.schedule("tests.ok", key="k", name="n")

    with pytest.raises(alarms.AlarmExists):
        alarms.reschedule(old, delay=60)

    assert Alarm.objects.get(pk=old.pk).state == Alarm.State.CANCELLED


# -- pause and resume -----------------------------------------------------------------------


def test_a_paused_alarm_is_not_delivered(now, delivered):
    alarm = alarms.schedule("tests.ok")

    alarms.pause(alarm)

    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.PAUSED
    assert run_due(now=T0 + timedelta(days=1)) == 0
    assert delivered == []


def test_resume_puts_a_one_off_back_at_its_due_time(now):
    alarm = alarms.schedule("tests.ok", delay=timedelta(hours=1))
    alarms.pause(alarm)

    with clock.frozen(T0 + timedelta(minutes=30)):
        alarms.resume(alarm)

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == T0 + timedelta(hours=1)
    assert run_due(now=T0 + timedelta(minutes=59)) == 0
    assert run_due(now=T0 + timedelta(hours=1)) == 1


def test_resume_delivers_a_one_off_whose_due_time_passed_at_once(now, delivered):
    alarm = alarms.schedule("tests.ok", delay=timedelta(hours=1))
    alarms.pause(alarm)
    later = T0 + timedelta(hours=5)

    with clock.frozen(later):
        alarms.resume(alarm)

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at <= later
    assert run_due(now=later) == 1
    assert delivered[0].due_at == T0 + timedelta(hours=1)


def test_resume_moves_a_recurring_alarm_to_its_next_future_occurrence(now, delivered):
    alarm = alarms.schedule_recurring("tests.ok", every=timedelta(hours=1))
    assert run_due(now=T0) == 1
    alarms.pause(alarm)
    later = T0 + timedelta(hours=2, minutes=30)

    with clock.frozen(later):
        alarms.resume(alarm)

    alarm.refresh_from_db()
    assert alarm.state == Alarm.State.SCHEDULED
    assert alarm.due_at == alarm.occurrence_at == T0 + timedelta(hours=3)
    delivered.clear()
    assert run_due(now=later) == 0
    assert run_due(now=T0 + timedelta(hours=3)) == 1
    assert delivered[0].due_at == T0 + timedelta(hours=3)


def test_resume_ends_a_recurring_alarm_whose_schedule_ended_while_paused(now):
    alarm = alarms.schedule_recurring(
        "tests.ok", every=timedelta(hours=1), end_at=T0 + timedelta(hours=2)
    )
    alarms.pause(alarm)

    with clock.frozen(T0 + timedelta(hours=5)):
        alarms.resume(alarm)

    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.State.SUCCEEDED


@pytest.mark.parametrize("state", ["paused", "cancelled", "succeeded"])
def test_pause_refuses_an_alarm_that_is_not_scheduled(now, state):
    alarm = alarms.schedule("tests.ok")
    if state == "paused":
        alarms.pause(alarm)
    elif state == "cancelled":
        alarms.cancel(alarm)
    else:
        run_due(now=T0)

    with pytest.raises(alarms.InvalidTransition):
        alarms.pause(alarm)


def test_resume_refuses_an_alarm_that_is_not_paused(now):
    alarm = alarms.schedule("tests.ok")

    with pytest.raises(alarms.InvalidTransition):
        alarms.resume(alarm)
