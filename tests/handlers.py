"""Handlers that the tests schedule, registered when ``tests/conftest.py`` imports this module.

Each handler appends the :class:`~django_alarms.alarms.AlarmContext` it receives to
:data:`calls` (the ``delivered`` fixture hands it to a test, emptied). Their delivery policies
are deterministic: no jitter, so that a test can compute every retry time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django_alarms import alarms

#: Every context delivered to a handler of this module, in delivery order.
calls: list[alarms.AlarmContext] = []

#: The retry delays of ``tests.boom`` and ``tests.flaky``: 10 s, 20 s, 40 s, ...
STEADY = {"base": 10, "factor": 2, "max": 3600, "jitter": 0}


@alarms.handler("tests.ok")
def ok(alarm: alarms.AlarmContext) -> None:
    calls.append(alarm)


@alarms.handler("tests.noop")
def noop(alarm: alarms.AlarmContext) -> None:
    """The handler of ``AlarmFactory`` rows."""
    calls.append(alarm)


@alarms.handler("tests.boom", max_attempts=3, backoff=STEADY)
def boom(alarm: alarms.AlarmContext) -> None:
    calls.append(alarm)
    raise RuntimeError(f"boom on attempt {alarm.attempt}")


@alarms.handler("tests.flaky", max_attempts=3, backoff=STEADY)
def flaky(alarm: alarms.AlarmContext) -> None:
    """Fails until attempt ``payload["succeed_on"]`` (within the budget)."""
    calls.append(alarm)
    if alarm.attempt < alarm.payload["succeed_on"]:
        raise ConnectionError(f"partner down (attempt {alarm.attempt})")


@alarms.handler("tests.fail")
def fail(alarm: alarms.AlarmContext) -> None:
    calls.append(alarm)
    raise alarms.Fail("no such account")


@alarms.handler("tests.retry", max_attempts=3)
def retry(alarm: alarms.AlarmContext) -> alarms.Retry:
    """Asks to be delivered again after ``payload["delay"]`` seconds, counting its steps."""
    calls.append(alarm)
    payload: dict[str, Any] = alarm.payload
    return alarms.Retry(
        delay=timedelta(seconds=payload["delay"]),
        payload={**payload, "step": payload.get("step", 0) + 1},
        reason="export not ready",
    )


@alarms.handler("tests.limited", max_attempts=2, timeout=7)
def limited(alarm: alarms.AlarmContext) -> None:
    calls.append(alarm)


def _require_account(payload: Any) -> None:
    if not isinstance(payload, dict) or not isinstance(payload.get("account"), int):
        raise ValueError("an integer 'account' is required")


@alarms.handler("tests.validated", validate=_require_account)
def validated(alarm: alarms.AlarmContext) -> None:
    calls.append(alarm)


@alarms.handler("tests.unstorable_retry", max_attempts=3)
def unstorable_retry(alarm: alarms.AlarmContext) -> alarms.Retry:
    """Answers with a payload that JSON cannot hold (a handler's fault, not the worker's)."""
    calls.append(alarm)
    return alarms.Retry(delay=60, payload={"when": object()})
