"""The ``ALARMS`` setting: one dict, every key optional, read lazily through :data:`alarm_settings`.

Values are validated by :func:`validate` (used by the system checks, so that a wrong value is
reported at start-up) and converted to their canonical types on access: durations become
:class:`~datetime.timedelta` whatever way they were written.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from django_alarms.backoff import Backoff
from django_alarms.exceptions import InvalidAlarm, shown
from django_alarms.validation import MAX_INT, parse_address


@dataclass(frozen=True, slots=True)
class ExecutorInfo:
    """An executor the package ships: where its class is, and what it needs beyond Django.

    Only these are ever imported: ``EXECUTOR`` and ``run_alarms --executor`` name one of them,
    never a dotted path.
    """

    #: Its class, as ``module.Class`` within ``django_alarms.executors``.
    path: str
    #: The worker's arguments it takes besides ``concurrency``, ``on_result`` and ``now``.
    takes: tuple[str, ...] = ()
    #: The module it imports, an app that must be in INSTALLED_APPS ("" for none).
    requires: str = ""
    #: The distribution that provides that module, and the extra of django-alarms that
    #: installs it.
    distribution: str = ""
    extra: str = ""
    #: The setting that configures it.
    configured_by: str = ""
    #: Whether ``requires`` is a Django app that must be in INSTALLED_APPS.
    app: bool = True
    #: Its CONCURRENCY when neither the setting nor ``--concurrency`` sets one (0: the
    #: setting's default).
    concurrency: int = 0


#: How many attempts an executor that hands them to another engine (django-q2, Celery) keeps
#: in flight when CONCURRENCY is not set: enough that the broker's queue never runs dry while
#: the worker learns of the attempts that ended (it looks every 20 to 200 ms). With 8, a herd
#: of no-op tasks drained at 97/s where bare django-q2 drained 970/s on the same cluster
#: (benchmarks, django_q scenario, --smoke).
REMOTE_CONCURRENCY = 256

#: The executors, by the name that ``EXECUTOR`` and ``--executor`` take.
EXECUTORS: Mapping[str, ExecutorInfo] = MappingProxyType(
    {
        "inline": ExecutorInfo("inline.InlineExecutor", takes=("may_start", "supervisor")),
        "django_q": ExecutorInfo(
            "django_q.DjangoQExecutor",
            takes=("db",),
            requires="django_q",
            distribution="django-q2",
            extra="django-q",
            configured_by="Q_CLUSTER",
            concurrency=REMOTE_CONCURRENCY,
        ),
        "celery": ExecutorInfo(
            "celery.CeleryExecutor",
            takes=("db",),
            requires="celery",
            distribution="celery",
            extra="celery",
            configured_by='ALARMS["CELERY"] and a Celery app',
            app=False,
            concurrency=REMOTE_CONCURRENCY,
        ),
    }
)


MAX_DURATION = timedelta(days=3650)
"""The longest duration a setting (or ``run_alarms`` option) accepts: ten years."""

MAX_CONCURRENCY = 10_000
"""The most handler threads (or attempts handed to a cluster) one worker may have."""


def _duration(value: object) -> timedelta:
    if isinstance(value, bool):
        raise TypeError("a duration is a timedelta or a number (a number means seconds)")
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        try:
            result = timedelta(seconds=value)
        except OverflowError:  # also an int too large for a float
            raise ValueError("is too large (more than ten years)") from None
    else:
        raise TypeError("a duration is a timedelta or a number (a number means seconds)")
    if result <= timedelta(0):
        raise ValueError("must be positive")
    if result > MAX_DURATION:
        raise ValueError("is too large (more than ten years)")
    return result


def _bounded_int(high: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be an integer")
        if not 1 <= value <= high:
            raise ValueError(f"must be between 1 and {high:,}")
        return value

    return convert


_positive_int = _bounded_int(MAX_INT)
_concurrency = _bounded_int(MAX_CONCURRENCY)


def _executor(value: object) -> str:
    if not isinstance(value, str) or value not in EXECUTORS:
        raise ValueError(f"must be one of {', '.join(EXECUTORS)}")
    return str(value)


def _backoff(value: object) -> Backoff:
    try:
        return Backoff.coerce(value)
    except InvalidAlarm as exc:
        raise ValueError(str(exc)) from None


def _words(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError("must be a list or tuple of strings")
    if not all(isinstance(word, str) and word for word in value):
        raise TypeError("must contain only non-empty strings")
    return tuple(word.lower() for word in value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be True or False")
    return value


def _alias(value: object) -> str:
    if not isinstance(value, str) or value not in settings.DATABASES:
        raise ValueError("must be an alias from settings.DATABASES")
    return value


def _address(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    return parse_address(value)


@dataclass(frozen=True, slots=True)
class CeleryOptions:
    """``ALARMS["CELERY"]``: the app (a dotted path, "" for Celery's current app), the queue
    the tasks go to, and how long a task may wait in it."""

    app: str = ""
    queue: str = "django_alarms"
    queue_wait: timedelta = timedelta(seconds=60)


def _celery(value: object) -> CeleryOptions:
    if isinstance(value, CeleryOptions):
        return value
    if not isinstance(value, Mapping):
        raise TypeError('must be a dict such as {"APP": "mysite.celery.app", "QUEUE": "alarms"}')
    unknown = set(value) - {"APP", "QUEUE", "QUEUE_WAIT"}
    if unknown:
        raise ValueError(f"has unknown keys {sorted(unknown)}: use APP, QUEUE, QUEUE_WAIT")
    app, queue = value.get("APP", ""), value.get("QUEUE", "django_alarms")
    if not isinstance(app, str):
        raise TypeError('["APP"] must be the dotted path of a Celery app, or ""')
    if not isinstance(queue, str) or not queue:
        raise TypeError('["QUEUE"] must be a non-empty string')
    wait = _duration(value.get("QUEUE_WAIT", 60))
    return CeleryOptions(app=app, queue=queue, queue_wait=wait)


def _token(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    if value and len(value) < 16:
        raise ValueError('is too short: use at least 16 characters (or "" for none)')
    return value


def _optional_bool(value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError("must be True, False or None")
    return value


@dataclass(frozen=True, slots=True)
class Option:
    default: object
    convert: Callable[[object], Any]
    doc: str


OPTIONS: Mapping[str, Option] = {
    "LOAD_INTERVAL": Option(
        timedelta(seconds=30),
        _duration,
        "How often a worker loads the alarms due within the next 2 x LOAD_INTERVAL.",
    ),
    "POLL_INTERVAL": Option(
        timedelta(seconds=1),
        _duration,
        "How often a worker looks for alarms scheduled or moved since its last look (on "
        "PostgreSQL, LISTEN/NOTIFY also wakes it at once; on SQLite, a check for commits "
        "every 100 ms).",
    ),
    "MAX_IN_MEMORY": Option(
        100_000, _positive_int, "The most alarms a worker holds armed in memory at once."
    ),
    "CONCURRENCY": Option(8, _concurrency, "Handler threads of the inline executor."),
    "EXECUTOR": Option(
        "inline",
        _executor,
        f"Where handlers run: {' or '.join(repr(name) for name in EXECUTORS)}.",
    ),
    "MAX_ATTEMPTS": Option(5, _positive_int, "Attempts per alarm when the handler sets none."),
    "BACKOFF": Option(
        Backoff(), _backoff, "Retry delays when the handler sets none (a Backoff or a dict)."
    ),
    "TIMEOUT": Option(
        timedelta(minutes=5), _duration, "Time limit of one attempt when the handler sets none."
    ),
    "LEASE_GRACE": Option(
        timedelta(seconds=30),
        _duration,
        "Extra time past an attempt's timeout before its claim counts as lost.",
    ),
    "HEARTBEAT_INTERVAL": Option(
        timedelta(seconds=10), _duration, "How often a worker records that it is alive."
    ),
    "KEEP_SUCCEEDED": Option(
        timedelta(days=7), _duration, "How long succeeded alarms are kept before they are purged."
    ),
    "KEEP_ATTEMPTS": Option(
        timedelta(days=30), _duration, "How long attempt records are kept before they are purged."
    ),
    "REDACT_KEYS": Option(
        ("password", "secret", "token", "authorization", "api_key", "apikey"),
        _words,
        "Payload keys containing one of these words (any case) are masked in the admin.",
    ),
    "AUTODISCOVER": Option(True, _bool, "Import the alarms.py module of every installed app."),
    "DATABASE": Option("default", _alias, "The database alias that holds the alarm tables."),
    "CELERY": Option(
        CeleryOptions(),
        _celery,
        'For EXECUTOR "celery": {"APP": the dotted path of the Celery app ("" for the current '
        'app), "QUEUE": the queue the tasks go to, "QUEUE_WAIT": how long a task may wait in '
        "it (a duration)}.",
    ),
    "METRICS_PORT": Option(
        None,
        _address,
        "Where run_alarms serves Prometheus metrics: a port (every interface) or "
        '"host:port"; None serves none (needs the prometheus extra).',
    ),
    "METRICS_TOKEN": Option(
        "",
        _token,
        "A secret that lets a scraper read the metrics view of django_alarms.urls with "
        '"Authorization: Bearer <token>" ("" for none: then only users with the '
        "view_alarm permission may).",
    ),
    "TRACING": Option(
        None,
        _optional_bool,
        "Link each delivery's OpenTelemetry span to the trace that scheduled the alarm: None "
        "when opentelemetry-api is installed, True always (a system check says when it is "
        "missing), False never.",
    ),
}


def user_settings() -> Mapping[str, object]:
    value = getattr(settings, "ALARMS", {})
    return value if isinstance(value, Mapping) else {}


def validate() -> list[tuple[str, str]]:
    """Return ``(key, problem)`` pairs for every unknown key and wrong value of ``ALARMS``."""
    raw = getattr(settings, "ALARMS", {})
    if not isinstance(raw, Mapping):
        return [("ALARMS", f"must be a dict, not {type(raw).__name__}")]
    problems = []
    for key, value in raw.items():
        option = OPTIONS.get(key)
        if option is None:
            problems.append((key, "is not a known setting"))
            continue
        try:
            option.convert(value)
        except (TypeError, ValueError) as exc:
            problems.append((key, f"is {shown(value)}: {exc}"))
    return problems


class AlarmSettings:
    """Lazy access to ``settings.ALARMS`` with defaults; cached until the setting changes.

    A value, once converted, is stored as an attribute of the instance, so later reads are
    plain attribute reads (the worker reads some of them for every attempt); ``__getattr__``
    only runs for the first read of each name after a change.
    """

    # The type of each setting once converted (annotations only: reads go to __getattr__).
    LOAD_INTERVAL: timedelta
    POLL_INTERVAL: timedelta
    MAX_IN_MEMORY: int
    CONCURRENCY: int
    EXECUTOR: str
    MAX_ATTEMPTS: int
    BACKOFF: Backoff
    TIMEOUT: timedelta
    LEASE_GRACE: timedelta
    HEARTBEAT_INTERVAL: timedelta
    KEEP_SUCCEEDED: timedelta
    KEEP_ATTEMPTS: timedelta
    REDACT_KEYS: tuple[str, ...]
    AUTODISCOVER: bool
    DATABASE: str
    CELERY: CeleryOptions
    METRICS_PORT: tuple[str, int] | None
    METRICS_TOKEN: str
    TRACING: bool | None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        option = OPTIONS.get(name)
        if option is None:
            raise AttributeError(f"unknown ALARMS setting {name!r}")
        raw = user_settings().get(name, option.default)
        value = option.convert(raw)
        self.__dict__[name] = value
        return value

    def reload(self) -> None:
        self.__dict__.clear()


alarm_settings = AlarmSettings()


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: object) -> None:
    if setting in ("ALARMS", "DATABASES"):
        alarm_settings.reload()


#: The backend of Django's Tasks framework that this package provides.
TASKS_BACKEND = "django_alarms.tasks.AlarmsBackend"


def tasks_backends() -> list[str]:
    """The aliases of ``settings.TASKS`` that use :data:`TASKS_BACKEND`."""
    configured = getattr(settings, "TASKS", None)
    if not isinstance(configured, dict):
        return []
    return [
        alias
        for alias, params in configured.items()
        if isinstance(params, dict) and params.get("BACKEND") == TASKS_BACKEND
    ]


def tasks_framework() -> bool:
    """Whether Django's Tasks framework is importable (Django 6, or the django-tasks backport)."""
    return any(importlib.util.find_spec(name) for name in ("django.tasks", "django_tasks"))
