"""The worker's log records: the same ``extra`` keys on every line, exceptions as ``exc_info``,
UTC times, and the JSON formatter."""

from __future__ import annotations

import json
import logging
import time

import pytest

from django_alarms import alarms
from django_alarms.logs import FIELDS, JSONFormatter, UTCFormatter
from django_alarms.worker.runner import Options, Runner


@pytest.mark.django_db(transaction=True)
def test_every_worker_line_carries_the_stable_keys_and_a_failure_its_exception(caplog):
    ok = alarms.schedule("tests.ok", {})
    boom = alarms.schedule("tests.fail", {})
    caplog.set_level(logging.DEBUG, logger="django_alarms")
    worker = Runner(Options.from_settings(once=True))
    worker.run()
    records = [r for r in caplog.records if r.name.startswith("django_alarms")]
    assert records
    for record in records:
        for key in FIELDS:
            assert hasattr(record, key), (key, record.getMessage())
        assert record.worker == worker.name
    attempts = {r.alarm_id: r for r in records if r.alarm_id and r.outcome}
    line = attempts[str(ok.id)]
    assert (line.handler, line.attempt, line.outcome, line.state) == (
        "tests.ok",
        1,
        "ok",
        "succeeded",
    )
    assert line.lateness_ms >= 0
    assert line.exc_info is None
    failed = attempts[str(boom.id)]
    assert failed.levelno == logging.ERROR
    assert (failed.outcome, failed.state) == ("error", "failed")
    assert failed.exc_info is not None
    assert failed.exc_info[0] is alarms.Fail
    started = next(r for r in records if "started: executor=" in r.getMessage())
    assert started.alarm_id is None
    assert started.outcome is None


def test_the_json_formatter_writes_the_keys_and_the_traceback():
    try:
        raise ValueError("bad payload")
    except ValueError:
        import sys

        info = sys.exc_info()
    record = logging.LogRecord(
        "django_alarms.worker", logging.ERROR, "f", 1, "alarm %s", ("x",), info
    )
    record.__dict__.update(alarm_id="a1", handler="h", attempt=2, outcome="error", lateness_ms=1.5)
    record.worker = "w"
    record.state = "scheduled"
    entry = json.loads(JSONFormatter().format(record))
    assert entry["message"] == "alarm x"
    assert {key: entry[key] for key in FIELDS} == {
        "alarm_id": "a1",
        "handler": "h",
        "attempt": 2,
        "outcome": "error",
        "lateness_ms": 1.5,
        "worker": "w",
    }
    assert entry["state"] == "scheduled"
    assert entry["time"].endswith("+00:00")
    assert "ValueError: bad payload" in entry["exception"]


def test_the_worker_prefix_is_utc_like_the_times_inside_its_lines():
    record = logging.LogRecord("django_alarms.worker", logging.INFO, "f", 1, "hello", (), None)
    record.created = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z
    record.msecs = 250
    assert UTCFormatter().format(record) == (
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}.250Z INFO    "
        "django_alarms.worker: hello"
    )
