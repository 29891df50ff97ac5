"""The Celery executor: django-alarms keeps the time, Celery's workers do the work.

The worker (``run_alarms --executor celery``) still loads, arms, claims and fires alarms on
time; at the due time it sends one Celery task per attempt, :data:`TASK`, with ids only
(``alarm_id``, attempt number, worker id, and the occurrence a recurring alarm delivers),
serialised as JSON, never pickle, to the queue ``ALARMS["CELERY"]["QUEUE"]`` of the Celery app
``ALARMS["CELERY"]["APP"]`` (the project's default app when empty). A Celery worker runs
:func:`run_attempt`: the same delivery code as the inline executor, and the same fenced write
of the :class:`~django_alarms.models.Attempt` in django-alarms' tables, which stay the source of
truth. Celery never retries anything, and its result backend is not used.

- **Time limits.** Each task carries ``soft_time_limit`` (the attempt's timeout, rounded up)
  and ``time_limit`` (a few seconds more). A handler that runs past the soft limit gets
  ``SoftTimeLimitExceeded`` and its attempt is recorded as ``timeout``; one that ignores it is
  killed at the hard limit (prefork pool), and the worker records the timeout at its deadline.
- **Queue wait.** A task waits in the broker at most ``QUEUE_WAIT`` seconds (its ``expires``):
  Celery discards it after that, and the worker's deadline is the queue wait, the timeout and
  a margin after the hand-off; the lease covers as much, renewed by the worker's heartbeat.
- **Lost tasks.** Tasks are acknowledged when a Celery worker takes them (Celery's default, not
  ``acks_late``), so a broker never starts a second copy of an attempt. A task that Celery
  loses (its worker killed, the broker flushed) leaves the alarm ``running`` under the
  ``run_alarms`` worker, which records the attempt as ``timeout`` at its deadline and retries it
  by the alarm's policy; if that worker is gone too, the rescue sweep of any worker records it
  as ``lost`` once its lease expires.

The Celery workers need the same settings (``ALARMS["EXECUTOR"] = "celery"`` makes the app
register :data:`TASK` at start-up). Nothing imports ``celery`` before the executor is used.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from django_alarms.claims import Claim
from django_alarms.conf import alarm_settings
from django_alarms.delivery import ERROR_MAX_LENGTH
from django_alarms.executors import ResultCallback
from django_alarms.executors.remote import Handoff, RemoteExecutor, run_claimed
from django_alarms.outcomes import Result, timed_out
from django_alarms.types import Outcome

logger = logging.getLogger(__name__)

#: The name of the task the Celery workers run.
TASK = "django_alarms.run_attempt"
#: Seconds between a task's soft time limit (the attempt's timeout) and its hard one.
HARD_LIMIT_GRACE = 3


def celery_app() -> Any:
    """The Celery app of ``ALARMS["CELERY"]["APP"]`` (a dotted path in the project's own
    settings), or Celery's current app."""
    configured = alarm_settings.CELERY.app
    if configured:
        return import_string(configured)
    from celery import current_app

    return current_app


class CeleryExecutor(RemoteExecutor):
    """Send each attempt as a Celery task; watch the rows to learn when it ended."""

    name = "celery"
    engine = "the Celery workers"

    def __init__(
        self,
        *,
        concurrency: int,
        on_result: ResultCallback,
        now: Callable[[], datetime],
        db: str,
    ) -> None:
        super().__init__(concurrency=concurrency, on_result=on_result, now=now, db=db)
        options = alarm_settings.CELERY
        self.queue = options.queue
        self.queue_wait = options.queue_wait.total_seconds()
        self._app: Any = None

    def connect(self) -> None:
        register()
        self._app = celery_app()

    def send(self, handoff: Handoff) -> None:
        claim = handoff.claim
        soft = max(1, math.ceil(handoff.limit))
        self._app.send_task(
            TASK,
            args=[str(claim.alarm_id), claim.number, str(claim.worker_id)],
            kwargs={
                "occurrence_at": claim.occurrence_at.isoformat() if claim.occurrence_at else None,
                "db": self.db,
            },
            queue=self.queue,
            serializer="json",
            soft_time_limit=soft,
            time_limit=soft + HARD_LIMIT_GRACE,
            expires=timezone.now() + timedelta(seconds=self.queue_wait),
            ignore_result=True,
            shadow=f"alarm {claim.alarm_id} #{claim.number} {claim.handler}",
        )

    def _allowed(self, limit: float) -> float:
        return super()._allowed(limit) + HARD_LIMIT_GRACE


# -- in a Celery worker ---------------------------------------------------------------------------


def run_attempt(
    alarm_id: str,
    attempt: int,
    worker_id: str,
    occurrence_at: str | None = None,
    db: str | None = None,
) -> str:
    """Run one claimed attempt in a Celery worker and record it (fenced). Returns the outcome,
    or ``"not held"`` when the claim is gone: then nothing runs and nothing is written."""
    return run_claimed(
        alarm_id,
        attempt,
        worker_id,
        occurrence_at=occurrence_at,
        db=db,
        recorded_by=f"{socket.gethostname()}:{os.getpid()} (celery)",
        on_raised=_raised,
        answered=_answered,
    )


def _soft_limit(exc: BaseException | None) -> bool:
    from celery.exceptions import SoftTimeLimitExceeded

    return isinstance(exc, SoftTimeLimitExceeded)


def _answered(claim: Claim, result: Result, limit: float) -> Result:
    """A handler cut short by the soft time limit: a timeout, not an error."""
    if _soft_limit(result.exception):
        return timed_out(claim, result.started_at, result.finished_at, limit)
    return result


def _raised(claim: Claim, exc: BaseException, started: datetime, limit: float) -> Result:
    """What escaped the delivery (a ``SystemExit`` or ``KeyboardInterrupt`` of the handler's,
    or Celery's own time limit): recorded before Celery sees it."""
    finished = timezone.now()
    if _soft_limit(exc):
        return timed_out(claim, started, finished, limit)
    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Result(Outcome.ERROR, started, finished, error[:ERROR_MAX_LENGTH])


_registered = False


def register() -> None:
    """Register :data:`TASK` with every Celery app of this process (as ``shared_task`` does),
    acknowledged on receipt, never retried, its result ignored."""
    global _registered
    if _registered:
        return
    from celery import shared_task

    shared_task(
        name=TASK,
        acks_late=False,
        ignore_result=True,
        serializer="json",
        max_retries=0,
    )(run_attempt)
    _registered = True


__all__ = ["TASK", "CeleryExecutor", "celery_app", "register", "run_attempt"]
