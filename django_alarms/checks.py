"""System checks: a wrong ``ALARMS`` value is reported at start-up, not at 3 a.m."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core.checks import CheckMessage, Error, Tags, register

from django_alarms.conf import OPTIONS, user_settings, validate


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
    if (
        user_settings().get("EXECUTOR") == "django_q"
        and importlib.util.find_spec("django_q") is None
    ):
        messages.append(
            Error(
                'ALARMS["EXECUTOR"] is "django_q" but django-q2 is not installed.',
                hint='pip install "django-alarms[django-q]", and add "django_q" to INSTALLED_APPS.',
                id="django_alarms.E003",
            )
        )
    if (
        user_settings().get("EXECUTOR") == "django_q"
        and importlib.util.find_spec("django_q") is not None
        and not apps.is_installed("django_q")
    ):
        messages.append(
            Error(
                'ALARMS["EXECUTOR"] is "django_q" but "django_q" is not in INSTALLED_APPS.',
                hint='Add "django_q" to INSTALLED_APPS and configure Q_CLUSTER.',
                id="django_alarms.E004",
            )
        )
    return messages
