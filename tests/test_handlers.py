"""The handler registry: ``@alarms.handler``, lookups, autodiscovery."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_alarms import alarms, clock
from django_alarms.backoff import Backoff
from django_alarms.handlers import HandlerSpec, autodiscover, registry
from django_alarms.models import Alarm
from django_alarms.testing import run_due
from tests import handlers

UTC = timezone.utc
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)


def test_the_decorator_registers_a_function_under_its_name_with_its_policy():
    def send(alarm: alarms.AlarmContext) -> None:
        pass

    returned = alarms.handler(
        "tests.send", max_attempts=4, timeout=30, backoff={"base": 5, "jitter": 0}
    )(send)

    assert returned is send
    assert send.alarm_handler == "tests.send"
    spec = registry.get("tests.send")
    assert spec is not None
    assert spec.func is send
    assert spec.max_attempts == 4
    assert spec.timeout == timedelta(seconds=30)
    assert spec.backoff == Backoff(base=5, jitter=0)
    assert spec.validate is None
    assert "tests.send" in registry
    assert "tests.send" in registry.names()


def test_the_bare_decorator_names_the_handler_after_its_module_and_qualname():
    @alarms.handler
    def nightly(alarm: alarms.AlarmContext) -> None:
        pass

    name = (
        "tests.test_handlers"
        ".test_the_bare_decorator_names_the_handler_after_its_module_and_qualname"
        ".<locals>.nightly"
    )
    assert nightly.alarm_handler == name
    assert registry.get(name).func is nightly


def test_the_decorator_called_without_a_name_does_the_same():
    @alarms.handler(max_attempts=2)
    def weekly(alarm: alarms.AlarmContext) -> None:
        pass

    assert weekly.alarm_handler.endswith(".<locals>.weekly")
    assert weekly.alarm_handler.startswith(f"{__name__}.")
    assert registry.get(weekly.alarm_handler).max_attempts == 2


@pytest.mark.django_db
def test_a_handler_registered_without_a_name_can_be_scheduled_by_function(delivered):
    calls: list[alarms.AlarmContext] = []

    @alarms.handler
    def unnamed(alarm: alarms.AlarmContext) -> None:
        calls.append(alarm)

    with clock.frozen(T0):
        alarm = alarms.schedule(unnamed, {"n": 1})
    assert run_due(now=T0) == 1

    assert alarm.handler == unnamed.alarm_handler
    assert [context.payload for context in calls] == [{"n": 1}]


def test_the_same_name_for_another_function_is_a_configuration_error():
    def first(alarm: alarms.AlarmContext) -> None:
        pass

    def second(alarm: alarms.AlarmContext) -> None:
        pass

    alarms.handler("tests.twice")(first)

    with pytest.raises(ImproperlyConfigured) as raised:
        alarms.handler("tests.twice")(second)

    assert "tests.twice" in str(raised.value)
    assert registry.get("tests.twice").func is first


def test_registering_the_same_function_again_is_harmless():
    # What re-importing a module (autoreload) does.
    spec = registry.get("tests.ok")

    alarms.handler("tests.ok")(handlers.ok)
    registry.register(HandlerSpec(name="tests.ok", func=handlers.ok))

    assert registry.get("tests.ok").func is spec.func


def test_an_existing_handler_name_cannot_be_taken_over():
    with pytest.raises(ImproperlyConfigured):

        @alarms.handler("tests.ok")
        def impostor(alarm: alarms.AlarmContext) -> None:
            pass

    assert registry.get("tests.ok").func is handlers.ok


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "   "}, "name", id="blank-name"),
        pytest.param({"name": 42}, "name", id="name-not-string"),
        pytest.param({"name": "h" * 201}, "name", id="name-too-long"),
        pytest.param({"max_attempts": 0}, "max_attempts", id="max-attempts-zero"),
        pytest.param({"max_attempts": True}, "max_attempts", id="max-attempts-bool"),
        pytest.param({"max_attempts": "3"}, "max_attempts", id="max-attempts-string"),
        pytest.param({"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": -1}, "timeout", id="timeout-negative"),
        pytest.param({"timeout": timedelta(0)}, "timeout", id="timeout-zero-timedelta"),
        pytest.param({"timeout": "30s"}, "timeout", id="timeout-string"),
        pytest.param({"timeout": math.nan}, "timeout", id="timeout-nan"),
        pytest.param({"backoff": {"bogus": 1}}, "backoff", id="backoff-unknown-key"),
        pytest.param({"backoff": "fast"}, "backoff", id="backoff-string"),
        pytest.param({"backoff": {"factor": 0.5}}, "backoff.factor", id="backoff-factor"),
        pytest.param({"validate": 123}, "validate", id="validate-not-callable"),
    ],
)
def test_bad_decorator_arguments_raise_invalid_alarm(kwargs, field):
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "tests.bad")

    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.handler(name, **kwargs)(handlers.ok)

    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(f"{field}=")
    assert "tests.bad" not in registry


def test_resolve_finds_a_handler_by_name_or_function():
    assert registry.resolve("tests.ok").func is handlers.ok
    assert registry.resolve(handlers.ok).name == "tests.ok"


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param("tests.missing", id="unknown-name"),
        pytest.param(lambda alarm: None, id="undecorated-function"),
        pytest.param(42, id="not-a-handler"),
    ],
)
def test_resolve_raises_unknown_handler(handler):
    with pytest.raises(alarms.UnknownHandler) as raised:
        registry.resolve(handler)

    assert raised.value.field == "handler"
    assert str(raised.value).startswith("handler=")


def test_unregister_forgets_a_handler():
    alarms.handler("tests.gone")(lambda alarm: None)

    registry.unregister("tests.gone")
    registry.unregister("tests.gone")  # twice is fine

    assert registry.get("tests.gone") is None
    with pytest.raises(alarms.UnknownHandler):
        registry.resolve("tests.gone")


@pytest.mark.django_db
def test_a_handlers_callable_backoff_sets_the_retry_delay():
    @alarms.handler("tests.slow_backoff", max_attempts=3, backoff=lambda n: timedelta(minutes=n))
    def slow(alarm: alarms.AlarmContext) -> None:
        raise RuntimeError("down")

    with clock.frozen(T0):
        alarm = alarms.schedule("tests.slow_backoff")
    run_due(now=T0)
    alarm.refresh_from_db()
    assert alarm.due_at == T0 + timedelta(minutes=1)
    run_due(now=alarm.due_at)
    alarm.refresh_from_db()
    assert alarm.due_at == T0 + timedelta(minutes=1) + timedelta(minutes=2)


@pytest.mark.django_db
def test_validate_is_called_with_the_payload_and_may_raise_invalid_alarm_itself():
    seen: list[Any] = []

    def strict(payload: Any) -> None:
        seen.append(payload)
        if payload != {"ok": True}:
            raise alarms.InvalidAlarm("payload.ok=False: must be true", field="payload.ok")

    alarms.handler("tests.strict", validate=strict)(lambda alarm: None)

    alarms.schedule("tests.strict", {"ok": True})
    with pytest.raises(alarms.InvalidAlarm) as raised:
        alarms.schedule("tests.strict", {"ok": False})

    assert str(raised.value) == "payload.ok=False: must be true"
    assert seen == [{"ok": True}, {"ok": False}]
    assert Alarm.objects.count() == 1


# -- autodiscovery --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["send_reminder", "flaky_partner_call", "poll_export", "heartbeat_report"]
)
def test_autodiscovery_registered_the_example_apps_handlers(name):
    spec = registry.get(name)

    assert spec is not None
    assert spec.func.__module__ == "testproject.example.alarms"


def test_autodiscovered_handlers_keep_their_policy():
    spec = registry.get("send_reminder")

    assert (spec.max_attempts, spec.timeout) == (5, timedelta(seconds=30))


def test_autodiscovering_again_registers_nothing_twice():
    before = registry.names()

    autodiscover()

    assert registry.names() == before
