"""The ``ALARMS`` setting (``django_alarms.conf``) and its system checks."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import Error, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_alarms.backoff import Backoff
from django_alarms.checks import check_settings
from django_alarms.conf import (
    EXECUTORS,
    OPTIONS,
    AlarmSettings,
    CeleryOptions,
    alarm_settings,
    validate,
)

DEFAULTS = {
    "LOAD_INTERVAL": timedelta(seconds=30),
    "POLL_INTERVAL": timedelta(seconds=1),
    "MAX_IN_MEMORY": 100_000,
    "CONCURRENCY": 8,
    "EXECUTOR": "inline",
    "MAX_ATTEMPTS": 5,
    "BACKOFF": Backoff(base=10, factor=2, max=3600, jitter=0.1),
    "TIMEOUT": timedelta(minutes=5),
    "LEASE_GRACE": timedelta(seconds=30),
    "HEARTBEAT_INTERVAL": timedelta(seconds=10),
    "KEEP_SUCCEEDED": timedelta(days=7),
    "KEEP_ATTEMPTS": timedelta(days=30),
    "REDACT_KEYS": ("password", "secret", "token", "authorization", "api_key", "apikey"),
    "AUTODISCOVER": True,
    "DATABASE": "default",
    "CELERY": CeleryOptions(),
    "METRICS_PORT": None,
    "METRICS_TOKEN": "",
    "TRACING": None,
}
DURATIONS = [key for key, value in DEFAULTS.items() if isinstance(value, timedelta)]


def setting(key: str) -> Any:
    """The value of ``ALARMS[key]`` as the package reads it."""
    return getattr(alarm_settings, key)


def test_the_settings_object_declares_the_type_of_every_setting():
    assert set(AlarmSettings.__annotations__) == set(OPTIONS)


def test_every_documented_key_has_a_default():
    assert set(OPTIONS) == set(DEFAULTS)


@override_settings(ALARMS={})
@pytest.mark.parametrize(("key", "default"), list(DEFAULTS.items()), ids=list(DEFAULTS))
def test_defaults(key, default):
    assert setting(key) == default


@override_settings()
def test_defaults_apply_when_the_setting_is_missing(settings):
    del settings.ALARMS

    assert setting("MAX_ATTEMPTS") == 5
    assert check_settings(None) == []


@pytest.mark.parametrize("key", DURATIONS)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(90, id="int"),
        pytest.param(90.0, id="float"),
        pytest.param(timedelta(seconds=90), id="timedelta"),
    ],
)
def test_a_duration_is_a_timedelta_or_a_number_of_seconds(key, value):
    with override_settings(ALARMS={key: value}):
        assert setting(key) == timedelta(seconds=90)
        assert check_settings(None) == []


def test_fractional_seconds_are_kept():
    with override_settings(ALARMS={"POLL_INTERVAL": 0.25}):
        assert setting("POLL_INTERVAL") == timedelta(milliseconds=250)


def test_the_test_settings_are_read():
    # testproject/settings.py sets LOAD_INTERVAL (from an environment variable, as a float).
    assert setting("LOAD_INTERVAL") == timedelta(seconds=30)


def test_override_settings_reloads_the_values():
    before = setting("MAX_ATTEMPTS")

    with override_settings(ALARMS={"MAX_ATTEMPTS": 11}):
        assert setting("MAX_ATTEMPTS") == 11
        with override_settings(ALARMS={"MAX_ATTEMPTS": 12}):
            assert setting("MAX_ATTEMPTS") == 12
        assert setting("MAX_ATTEMPTS") == 11

    assert setting("MAX_ATTEMPTS") == before


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"base": 1, "max": 60}, Backoff(base=1, max=60), id="dict"),
        pytest.param(Backoff(base=2, jitter=0), Backoff(base=2, jitter=0), id="instance"),
    ],
)
def test_backoff_is_a_backoff_or_a_dict_of_its_fields(value, expected):
    with override_settings(ALARMS={"BACKOFF": value}):
        assert setting("BACKOFF") == expected


def test_redact_keys_are_lower_cased_words():
    with override_settings(ALARMS={"REDACT_KEYS": ["IBAN", "Pin"]}):
        assert setting("REDACT_KEYS") == ("iban", "pin")


def test_an_unknown_attribute_is_an_error():
    with pytest.raises(AttributeError, match="NOPE"):
        alarm_settings.NOPE  # noqa: B018


# -- system checks --------------------------------------------------------------------------


def test_the_test_settings_pass_the_checks():
    assert check_settings(None) == []


WRONG = [
    ("LOAD_INTERVAL", 0),
    ("LOAD_INTERVAL", -1),
    ("LOAD_INTERVAL", "30"),
    ("LOAD_INTERVAL", True),
    ("POLL_INTERVAL", None),
    ("POLL_INTERVAL", timedelta(0)),
    ("TIMEOUT", -5),
    ("TIMEOUT", math.nan),
    ("TIMEOUT", math.inf),
    ("TIMEOUT", 1e20),
    ("LEASE_GRACE", timedelta(seconds=-1)),
    ("HEARTBEAT_INTERVAL", "10s"),
    ("KEEP_SUCCEEDED", []),
    ("KEEP_ATTEMPTS", 0),
    ("MAX_IN_MEMORY", 0),
    ("MAX_IN_MEMORY", 1.5),
    ("CONCURRENCY", 0),
    ("CONCURRENCY", True),
    ("CONCURRENCY", "8"),
    ("MAX_ATTEMPTS", -1),
    ("EXECUTOR", "rq"),
    ("EXECUTOR", None),
    ("BACKOFF", {"bogus": 1}),
    ("BACKOFF", {"factor": 0.5}),
    ("BACKOFF", {"jitter": 2}),
    ("BACKOFF", "fast"),
    ("BACKOFF", {"base": math.nan}),
    ("REDACT_KEYS", "password"),
    ("REDACT_KEYS", ["password", ""]),
    ("REDACT_KEYS", [1]),
    ("AUTODISCOVER", "yes"),
    ("AUTODISCOVER", 1),
    ("DATABASE", "elsewhere"),
    ("DATABASE", 0),
]


@pytest.mark.parametrize(("key", "value"), WRONG, ids=[f"{key}={value!r}" for key, value in WRONG])
def test_a_wrong_value_is_a_system_check_error_naming_the_key(key, value):
    with override_settings(ALARMS={key: value}):
        messages = check_settings(None)

    assert len(messages) == 1
    (message,) = messages
    assert isinstance(message, Error)
    assert message.id == "django_alarms.E001"
    assert f'ALARMS["{key}"]' in message.msg
    assert message.hint


@pytest.mark.parametrize("key", ["TIMEOUTS", "max_attempts", "RETRIES"])
def test_an_unknown_key_is_a_system_check_error_listing_the_known_ones(key):
    with override_settings(ALARMS={key: 1}):
        messages = check_settings(None)

    assert [message.id for message in messages] == ["django_alarms.E002"]
    assert f'ALARMS["{key}"]' in messages[0].msg
    assert "MAX_ATTEMPTS" in messages[0].hint


def test_every_wrong_key_is_reported():
    with override_settings(ALARMS={"CONCURRENCY": 0, "EXECUTOR": "rq", "RETRIES": 3}):
        messages = check_settings(None)

    assert sorted(message.id for message in messages) == [
        "django_alarms.E001",
        "django_alarms.E001",
        "django_alarms.E002",
    ]


@pytest.mark.parametrize("value", [["CONCURRENCY", 8], "inline", 8], ids=["list", "str", "int"])
def test_alarms_that_is_not_a_dict_is_a_system_check_error(value):
    with override_settings(ALARMS=value):
        messages = check_settings(None)

    assert [message.id for message in messages] == ["django_alarms.E001"]
    assert messages[0].msg.startswith("ALARMS must be a dict")


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_each_executor_of_the_table_takes_the_arguments_it_declares(name):
    info = EXECUTORS[name]
    module, _, class_name = info.path.rpartition(".")
    executor_class = getattr(
        importlib.import_module(f"django_alarms.executors.{module}"), class_name
    )

    assert executor_class.name == name
    assert set(inspect.signature(executor_class).parameters) == {
        "concurrency",
        "on_result",
        "now",
        *info.takes,
    }


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "missing"])
def test_the_django_q_executor_needs_django_q2(monkeypatch, installed):
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        if name == "django_q":
            return object() if installed else None
        return real(name, *args)

    with override_settings(ALARMS={"EXECUTOR": "django_q"}), monkeypatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", find_spec)
        messages = check_settings(None)

    # Installed but not in INSTALLED_APPS (as in the test settings): E004 says so.
    expected = ["django_alarms.E004"] if installed else ["django_alarms.E003"]
    assert [message.id for message in messages] == expected


def test_the_django_q_executor_is_accepted_when_the_app_is_installed(monkeypatch):
    from django_alarms import checks

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: object() if name == "django_q" else real(name, *args),
    )
    monkeypatch.setattr(checks.apps, "is_installed", lambda name: name == "django_q")
    with override_settings(ALARMS={"EXECUTOR": "django_q"}):
        assert check_settings(None) == []


@pytest.mark.django_db  # Django 6's check command also runs the database checks
def test_the_check_is_registered_with_django():
    with override_settings(ALARMS={"CONCURRENCY": 0}):
        ids = [message.id for message in run_checks()]
        with pytest.raises(SystemCheckError, match="CONCURRENCY"):
            call_command("check")

    assert "django_alarms.E001" in ids


def test_the_celery_options():
    with override_settings(ALARMS={"CELERY": {"APP": "mysite.celery.app", "QUEUE_WAIT": 5}}):
        assert (
            CeleryOptions(
                app="mysite.celery.app", queue="django_alarms", queue_wait=timedelta(seconds=5)
            )
            == alarm_settings.CELERY
        )
    for wrong, problem in (
        ("mysite.celery.app", "must be a dict"),
        ({"BROKER": "x"}, "unknown keys ['BROKER']"),
        ({"QUEUE": ""}, "non-empty string"),
        ({"QUEUE_WAIT": -1}, "must be positive"),
    ):
        with override_settings(ALARMS={"CELERY": wrong}):
            ((key, found),) = validate()
        assert key == "CELERY"
        assert problem in found
