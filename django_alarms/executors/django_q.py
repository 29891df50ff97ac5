"""The django-q2 executor: hand each attempt to a django-q2 cluster, which runs the handler.

Use it to spread handlers over many machines, or to run them in processes apart from the
worker (CPU-bound handlers, handlers that must not share a process with the others). At the due
time the worker enqueues one small task per attempt, ``run_attempt(alarm_id, attempt,
worker_id)``, by dotted path and with ids and primitives only; in a cluster process
:func:`run_attempt` runs and records it. The hand-off, the watching of the rows, the worker's
own timeout record and shutdown are :mod:`django_alarms.executors.remote`'s, shared with the
Celery executor.

Settings and interplay (see ``docs/howto/django-q.md``):

- ``ALARMS["EXECUTOR"] = "django_q"`` or ``run_alarms --executor django_q``; ``"django_q"`` in
  ``INSTALLED_APPS`` and a ``Q_CLUSTER`` whose broker the cluster and the worker share.
- The time limit: each task carries the attempt's timeout, rounded up to whole seconds, which
  django-q2 enforces (``SIGALRM`` in the cluster's worker process, then a kill 3 s later).
  ``Q_CLUSTER["timeout"]`` is only the default for other tasks, but set it at least as long as
  the longest handler timeout, and ``Q_CLUSTER["retry"]`` above it: a broker that redelivers
  unacknowledged tasks after ``retry`` seconds would otherwise start a second copy of a long
  attempt. Tasks are enqueued with ``ack_failure=True`` and are never retried by django-q2.
- ``CONCURRENCY`` (``--concurrency``) is how many attempts one worker hands to the cluster at
  once. The time limit counts from the hand-off, so keep the ``CONCURRENCY`` of all the
  workers that feed one cluster near its number of workers: attempts that wait in the broker
  for a free cluster process use up their time there.

Nothing imports ``django_q`` at module level: this module is imported by dotted path in the
cluster processes, and by :func:`~django_alarms.executors.get_executor` in the worker.
"""

from __future__ import annotations

import math
import os
import signal
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from django_alarms.claims import Claim
from django_alarms.delivery import ERROR_MAX_LENGTH
from django_alarms.executors import ResultCallback
from django_alarms.executors.remote import (
    DEADLINE_MARGIN,
    Handoff,
    RemoteExecutor,
    held_claim,
    run_claimed,
)
from django_alarms.outcomes import Result, timed_out
from django_alarms.types import Outcome

#: The task the cluster runs, by dotted path.
TASK = "django_alarms.executors.django_q.run_attempt"


class DjangoQExecutor(RemoteExecutor):
    """Enqueue each attempt as a django-q2 task; watch the rows to learn when it ended."""

    name = "django_q"
    engine = "the django-q cluster"

    def __init__(
        self,
        *,
        concurrency: int,
        on_result: ResultCallback,
        now: Callable[[], datetime],
        db: str,
    ) -> None:
        if not apps.is_installed("django_q"):
            raise ImproperlyConfigured(
                "The django_q executor needs django-q2 in INSTALLED_APPS: pip install "
                '"django-alarms[django-q]", add "django_q" to INSTALLED_APPS, configure '
                "Q_CLUSTER and run manage.py migrate."
            )
        super().__init__(concurrency=concurrency, on_result=on_result, now=now, db=db)
        self._broker: Any = None

    def connect(self) -> None:
        from django_q.brokers import get_broker

        # One broker (one connection pool) for every hand-off, instead of one per task.
        self._broker = get_broker()

    def send(self, handoff: Handoff) -> None:
        from django_q.tasks import async_task

        claim = handoff.claim
        async_task(
            TASK,
            str(claim.alarm_id),
            claim.number,
            str(claim.worker_id),
            occurrence_at=claim.occurrence_at.isoformat() if claim.occurrence_at else None,
            db=self.db,
            timeout=max(1, math.ceil(handoff.limit)),
            ack_failure=True,
            task_name=f"alarm {claim.alarm_id} #{claim.number}",
            broker=self._broker,
        )


# -- in the cluster ---------------------------------------------------------------------------


def run_attempt(
    alarm_id: str,
    attempt: int,
    worker_id: str,
    *,
    occurrence_at: str | None = None,
    db: str | None = None,
) -> str:
    """Run one claimed attempt in a django-q2 cluster process and record it (fenced).

    ``occurrence_at`` is the occurrence a recurring alarm delivers, as the worker decided it.
    Returns the attempt's outcome, or ``"not held"`` when the claim is gone (the worker gave up
    on the attempt, or the task was delivered twice): then nothing runs and nothing is written.
    """
    return run_claimed(
        alarm_id,
        attempt,
        worker_id,
        occurrence_at=occurrence_at,
        db=db,
        recorded_by=_worker_name(),
        on_raised=_raised,
        answered=_answered,
    )


def _raised(claim: Claim, exc: BaseException, started: datetime, limit: float) -> Result:
    """django-q2's time limit raises TimeoutException (a SystemExit) inside the handler; a
    handler may also raise SystemExit or KeyboardInterrupt itself. The attempt is recorded,
    then django-q2 sees the exception and replaces the process."""
    _disarm()
    finished = timezone.now()
    if _is_timeout(exc):
        return timed_out(claim, started, finished, limit)
    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Result(Outcome.ERROR, started, finished, error[:ERROR_MAX_LENGTH])


def _answered(claim: Claim, result: Result, limit: float) -> Result:
    # The time limit is the handler's; recording the answer is not cut short by it.
    _disarm()
    return result


#: Kept for the tests and callers of the earlier name.
_held_claim = held_claim


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()} (django-q)"


def _is_timeout(exc: BaseException) -> bool:
    try:
        from django_q.exceptions import TimeoutException
    except ImportError:
        return False
    return isinstance(exc, TimeoutException)


def _disarm() -> None:
    """Cancel django-q2's pending SIGALRM (it sets one per task in its worker processes)."""
    try:
        signal.alarm(0)
    except (AttributeError, ValueError):  # no SIGALRM on this platform
        pass


__all__ = ["DEADLINE_MARGIN", "TASK", "DjangoQExecutor", "run_attempt"]
