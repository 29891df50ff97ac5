"""System checks: a wrong ``ALARMS`` value is reported at start-up, not at 3 a.m."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from django_alarms.conf import (
    EXECUTORS,
    OPTIONS,
    TASKS_BACKEND,
    tasks_backends,
    tasks_framework,
    user_settings,
    validate,
)


@register(Tags.compatibility)
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for key, problem in validate():
        if key in OPTIONS or key == "ALARMS":
            setting = "ALARMS" if key == "ALARMS" else f'ALARMS["{key}"]'
            hint = OPTIONS[key].doc if key in OPTIONS else "Use a dict such as {'CONCURRENCY': 8}."
            messages.append(Error(f"{setting} {problem}.", hint=hint, id="django_alarms.E001"))
        else:
            messages.append(
                Error(
                    f'ALARMS["{key}"] {problem}.',
                    hint=f"Known settings: {', '.join(sorted(OPTIONS))}.",
                    id="django_alarms.E002",
                )
            )
    messages.extend(_check_executor())
    messages.extend(_check_tasks())
    messages.extend(_check_extras())
    messages.extend(_check_sqlite())
    return messages


#: What a SQLite database shared by web processes and workers needs (docs/howto/deploy.md).
SQLITE_OPTIONS = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def _check_sqlite() -> list[CheckMessage]:
    """A SQLite file without the options that let workers and web processes share it."""
    alias = user_settings().get("DATABASE", "default")
    config = settings.DATABASES.get(alias) if isinstance(alias, str) else None
    if not isinstance(config, dict) or not str(config.get("ENGINE", "")).endswith("sqlite3"):
        return []
    name = str(config.get("NAME", ""))
    if not name or name == ":memory:" or "mode=memory" in name:
        return []
    found = config.get("OPTIONS")
    options: dict[str, Any] = found if isinstance(found, dict) else {}
    missing = []
    if "timeout" not in options:
        missing.append('"timeout" (a busy timeout: wait for the write lock)')
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        missing.append('"transaction_mode": "IMMEDIATE"')
    if "journal_mode=wal" not in str(options.get("init_command", "")).lower().replace(" ", ""):
        missing.append('"init_command" with PRAGMA journal_mode=WAL')
    if not missing:
        return []
    return [
        Warning(
            f"DATABASES[{alias!r}] is SQLite without {', '.join(missing)}: web processes and "
            'workers sharing the file will meet "database is locked" errors.',
            hint=f'Set DATABASES[{alias!r}]["OPTIONS"] = {SQLITE_OPTIONS!r} (see the SQLite '
            "section of docs/howto/deploy.md).",
            id="django_alarms.W001",
        )
    ]


#: The optional integrations a setting can ask for: (setting, asks for it when its value is
#: this, the module, the distribution, the extra).
_EXTRAS = (
    ("METRICS_PORT", "set", "prometheus_client", "prometheus-client", "prometheus"),
    ("TRACING", True, "opentelemetry.trace", "opentelemetry-api", "otel"),
)


def _check_extras() -> list[CheckMessage]:
    """A setting that asks for an optional integration that is not installed."""
    configured = user_settings()
    messages: list[CheckMessage] = []
    for key, asks, module, distribution, extra in _EXTRAS:
        value = configured.get(key)
        wanted = value is not None if asks == "set" else value is asks
        if wanted and not _importable(module):
            messages.append(
                Error(
                    f'ALARMS["{key}"] is {value!r} but {distribution} is not installed.',
                    hint=f'pip install "django-alarms[{extra}]", or remove ALARMS["{key}"].',
                    id="django_alarms.E006",
                )
            )
    return messages


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing
        return False


def _check_tasks() -> list[CheckMessage]:
    """``TASKS`` names our backend: Django's Tasks framework must be importable."""
    aliases = tasks_backends()
    if not aliases:
        return []
    if tasks_framework():
        return []
    return [
        Error(
            f"TASKS[{aliases[0]!r}] uses {TASKS_BACKEND} but Django's Tasks framework is not "
            "available: Django 6.0 and later have it, Django 5.2 needs the django-tasks backport.",
            hint='pip install "django-alarms[tasks]" (on Django 5.2), or upgrade Django.',
            id="django_alarms.E005",
        )
    ]


def _check_executor() -> list[CheckMessage]:
    """What the chosen executor needs beyond Django (``conf.EXECUTORS``)."""
    name = user_settings().get("EXECUTOR")
    executor = EXECUTORS.get(name) if isinstance(name, str) else None
    if executor is None or not executor.requires:
        return []
    module = executor.requires
    if importlib.util.find_spec(module) is None:
        return [
            Error(
                f'ALARMS["EXECUTOR"] is "{name}" but {executor.distribution} is not installed.',
                hint=f'pip install "django-alarms[{executor.extra}]"'
                + (f', and add "{module}" to INSTALLED_APPS.' if executor.app else "."),
                id="django_alarms.E003",
            )
        ]
    if executor.app and not apps.is_installed(module):
        return [
            Error(
                f'ALARMS["EXECUTOR"] is "{name}" but "{module}" is not in INSTALLED_APPS.',
                hint=f'Add "{module}" to INSTALLED_APPS and configure {executor.configured_by}.',
                id="django_alarms.E004",
            )
        ]
    return []
