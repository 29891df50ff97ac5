"""Where Django's Tasks framework comes from: ``django.tasks`` (Django 6.0 and later) or, on
Django 5.2, the ``django-tasks`` backport (``pip install "django-alarms[tasks]"``). Only
:mod:`django_alarms.tasks` imports this module; nothing else in the package needs either.

The names are loaded by module name, so that type checkers see one set of names whichever of
the two is installed (both have the same API).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any


def _framework() -> tuple[str, ModuleType, ModuleType]:
    for package, json_module in (("django.tasks", "django.utils.json"), ("django_tasks", None)):
        try:
            root = import_module(package)
        except ImportError:
            continue
        return package, root, import_module(json_module or f"{package}.utils")
    raise ImportError(
        "django_alarms.tasks needs Django's Tasks framework: Django 6.0 and later have it "
        "(django.tasks); on Django 5.2 install the django-tasks backport "
        '(pip install "django-alarms[tasks]")'
    )


SOURCE, _root, _json = _framework()
_base = import_module(f"{SOURCE}.base")
_exceptions = import_module(f"{SOURCE}.exceptions")
_signals = import_module(f"{SOURCE}.signals")

DEFAULT_TASK_QUEUE_NAME: str = _root.DEFAULT_TASK_QUEUE_NAME
BaseTaskBackend: Any = import_module(f"{SOURCE}.backends.base").BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
task_backends: Any = _root.task_backends
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
normalize_json: Any = _json.normalize_json
#: Django 6.1 calls it InvalidTask; Django 6.0 and the backport InvalidTaskError.
InvalidTask: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
task: Any = _root.task
