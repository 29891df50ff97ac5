"""Run by .ci/run in a virtual environment with ``pip install .`` only: the app installs,
migrates, passes its checks and delivers an alarm with none of its optional integrations, and
each integration that settings ask for is explained instead of failing with a traceback."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

OPTIONAL = ("prometheus_client", "opentelemetry", "health_check", "django_q", "celery")


def says(call: Callable[[], object], error: type[Exception], text: str) -> None:
    """``call()`` raises ``error`` with ``text`` in its message."""
    try:
        call()
    except error as exc:
        message = str(exc)
    else:
        raise AssertionError(f"no {error.__name__}: expected one saying {text!r}")
    if text not in message:
        raise AssertionError(f"{error.__name__} does not say {text!r}: {message}")


def main() -> None:
    for name in OPTIONAL:
        assert importlib.util.find_spec(name) is None, f"{name} is installed: not a bare install"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bare.sqlite3"
    import django

    django.setup()
    from django.core.management import CommandError, call_command
    from django.test import Client, override_settings

    from django_alarms import alarms, checks, metrics, tracing
    from django_alarms.models import Alarm

    call_command("migrate", verbosity=0)
    call_command("check", fail_level="WARNING")

    @alarms.handler("bare.ok")
    def ok(alarm: alarms.AlarmContext) -> None:
        pass

    alarm = alarms.schedule("bare.ok", {"n": 1})  # due now: --once delivers it
    call_command("run_alarms", "--once", verbosity=0)
    alarm.refresh_from_db()
    assert alarm.state == "succeeded", alarm.state
    assert alarm.trace_context == ""
    assert not tracing.on()
    assert not metrics.available()

    says(
        lambda: call_command("run_alarms", "--once", "--metrics-port", "9109"),
        CommandError,
        "django-alarms[prometheus]",
    )

    with override_settings(ALARMS={"METRICS_PORT": 9109, "TRACING": True}):
        found = [message.id for message in checks.check_settings(None)]
    assert found == ["django_alarms.E006", "django_alarms.E006"], found
    with override_settings(ALARMS={"EXECUTOR": "celery"}):
        found = [message.id for message in checks.check_settings(None)]
    assert found == ["django_alarms.E003"], found
    for executor, extra in (("celery", "celery"), ("django_q", "django-q")):
        says(
            lambda executor=executor: call_command("run_alarms", "--once", "--executor", executor),
            CommandError,
            f"django-alarms[{extra}]",
        )

    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    response = client.get("/alarms/metrics")
    assert response.status_code == 501, response.status_code

    says(
        lambda: importlib.import_module("django_alarms.contrib.health_check"),
        ImportError,
        "django-alarms[health]",
    )

    for name in OPTIONAL:
        assert name not in sys.modules, f"{name} was imported"
    print(f"without extras: installed, migrated, checked, delivered {Alarm.objects.count()} alarm")


if __name__ == "__main__":
    main()
