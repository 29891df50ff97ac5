"""The worker's log records: stable ``extra`` keys, UTC times, and a JSON formatter.

Every record a worker logs under ``django_alarms`` carries the keys of :data:`FIELDS` as
attributes (``None`` where a line is not about one attempt): ``alarm_id``, ``handler``,
``attempt``, ``outcome``, ``lateness_ms`` and ``worker``. A format string or a log shipper
can therefore name them on any line. Attempt lines also carry ``state`` (what the alarm went
to) and, for a handler that raised, the exception as ``exc_info`` so that error trackers
(Sentry's logging integration and the like) group it by its traceback.

``run_alarms`` logs with :class:`UTCFormatter` unless the project configures logging itself:
the times in a line (the prefix, due times, retry times) are then all UTC. :class:`JSONFormatter`
writes one JSON object per line with these keys, for projects that ship logs as JSON::

    LOGGING = {
        "version": 1,
        "formatters": {"json": {"()": "django_alarms.logs.JSONFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"django_alarms": {"handlers": ["stderr"], "level": "INFO"}},
    }
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

#: The keys every worker record carries (``None`` when a line is not about one attempt).
FIELDS = ("alarm_id", "handler", "attempt", "outcome", "lateness_ms", "worker")
#: The loggers a worker's lines come from.
WORKER_LOGGERS = (
    "django_alarms.worker",
    "django_alarms.worker.loader",
    "django_alarms.delivery",
    "django_alarms.engines.base",
    "django_alarms.executors",
    "django_alarms.executors.inline",
)


class WorkerContext(logging.Filter):
    """Gives every record of a worker's loggers the keys of :data:`FIELDS`: those the line set
    itself are kept, ``worker`` is the worker's name, the others are ``None``."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        values = record.__dict__
        for key in FIELDS:
            if key not in values:
                values[key] = None
        if values["worker"] is None:
            values["worker"] = self.worker
        return True

    def install(self) -> None:
        for name in WORKER_LOGGERS:
            logging.getLogger(name).addFilter(self)

    def uninstall(self) -> None:
        for name in WORKER_LOGGERS:
            logging.getLogger(name).removeFilter(self)


class UTCFormatter(logging.Formatter):
    """``2026-12-04T20:11:45.321Z INFO    django_alarms.worker: ...``: the prefix in UTC, as
    every time inside the worker's lines is."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, fmt: str = "%(asctime)s %(levelname)-7s %(name)s: %(message)s") -> None:
        super().__init__(fmt)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the keys of :data:`FIELDS` and ``state`` when the record has them, and
    ``exception`` (the formatted traceback) when it carries one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in (*FIELDS, "state", "succeeded"):
            found = record.__dict__.get(key)
            if found is not None:
                entry[key] = found
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
