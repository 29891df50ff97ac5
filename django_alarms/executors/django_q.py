"""The django-q2 executor: hand each attempt to a django-q2 cluster, which runs the handler.

Use it to spread handlers over many machines, or to run them in processes apart from the
worker (CPU-bound handlers, handlers that must not share a process with the others). The worker
(``run_alarms``) still loads, arms, claims and fires alarms on time; at the due time it enqueues
one small task per attempt, ``run_attempt(alarm_id, attempt, worker_id)``, by dotted path and
with ids and primitives only (never a model instance, never the payload: the cluster reads the
claimed row). In a cluster process :func:`run_attempt` loads the row *fenced* on the claim
(running, held by that worker, that attempt number), calls the handler, applies the answer and
records the :class:`~django_alarms.models.Attempt` itself, with the same fenced write as the
inline executor. django-q2 never retries anything: django-alarms owns retries.

The worker learns that an attempt ended by watching the rows: a small thread asks, every 20 to
200 ms and in bounded queries, which of the attempts it handed off are still ``running`` under
it with the same attempt number. Those that are not were recorded by the cluster, and the
worker stops holding them. An attempt still running under the worker
:data:`DEADLINE_MARGIN` seconds after its time limit (django-q2 killed the process that ran it
before it could record anything, or no cluster took the task) is recorded as ``timeout`` by the
worker and retried by the alarm's policy; the fenced write makes a late record by the cluster
change nothing.

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
  once; the others wait in the worker, in order. The cluster's ``workers`` limit how many run in
  parallel. The time limit counts from the hand-off, so keep the ``CONCURRENCY`` of all the
  workers that feed one cluster near its number of workers: attempts that wait in the broker
  for a free cluster process use up their time there.
- Shutdown: claims the worker holds but has not handed off are released like the inline
  executor's unstarted ones (:meth:`DjangoQExecutor.take_unstarted`). Handed-off attempts belong
  to the cluster: the worker waits up to its shutdown timeout for them to be recorded, then
  leaves them to the cluster, with their leases extended to cover their time limit (the
  worker's heartbeat renews them while it runs). If the cluster never records one, the rescue
  sweep of any worker records it as ``lost`` once that lease has expired.

Nothing imports ``django_q`` at module level: this module is imported by dotted path in the
cluster processes, and by :func:`~django_alarms.executors.get_executor` in the worker.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_alarms.attempt_log import level_of, log_attempt
from django_alarms.claims import Claim, claims_from, stored_values
from django_alarms.conf import alarm_settings
from django_alarms.delivery import ERROR_MAX_LENGTH, execute, record, timeout_for
from django_alarms.engines import get_engine
from django_alarms.executors import ResultCallback, wait_while
from django_alarms.models import Alarm
from django_alarms.outcomes import Result, decide, timed_out
from django_alarms.supervision import close
from django_alarms.types import Outcome

logger = logging.getLogger(__name__)

#: The task the cluster runs, by dotted path.
TASK = "django_alarms.executors.django_q.run_attempt"
#: Seconds past an attempt's (rounded-up) time limit before the worker records it as a timeout
#: itself: more than django-q2's 3 s between its SIGALRM and killing the process.
DEADLINE_MARGIN = 5.0
#: The worker looks for ended attempts this often: fast while attempts end, slower when idle.
POLL_MIN = 0.02
POLL_MAX = 0.2
#: The most alarm ids one polling query asks about.
POLL_BATCH = 500
#: Seconds between attempts to enqueue when the broker refused a task.
HANDOFF_RETRY = 1.0


@dataclass(slots=True, eq=False)
class _Handoff:
    claim: Claim
    handed_at: datetime  # the worker's clock (the database's), for the Attempt row
    limit: float  # the attempt's time limit, seconds
    deadline: float  # time.monotonic() after which the worker records a timeout


class DjangoQExecutor:
    """Enqueue each attempt as a django-q2 task; watch the rows to learn when it ended."""

    name = "django_q"
    lead = 0.0

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
        self.concurrency = concurrency
        self.on_result = on_result
        self.now = now
        self.db = db
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: deque[Claim] = deque()
        self._flight: dict[tuple[uuid.UUID, int], _Handoff] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._retry_at = 0.0  # monotonic: no hand-off before this, after the broker failed
        self._broker: Any = None
        self._thread: threading.Thread | None = None

    # -- Executor protocol ---------------------------------------------------------------------

    def start(self) -> None:
        from django_q.brokers import get_broker

        # One broker (one connection pool) for every hand-off, instead of one per task.
        self._broker = get_broker()
        self._thread = threading.Thread(target=self._watch, name="alarms-django-q", daemon=True)
        self._thread.start()

    def submit(self, claim: Claim, at: float | None = None) -> None:
        with self._lock:
            if self._pending or len(self._flight) >= self.concurrency:
                self._pending.append(claim)
                return
            handoff = self._reserve(claim)
        self._send(handoff)

    def held(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._flight)

    def take_unstarted(self) -> list[Claim]:
        # Only what was never enqueued: a task in the broker cannot be taken back reliably,
        # and the fence makes it harmless if the cluster runs it after the claim is gone.
        with self._lock:
            taken = list(self._pending)
            self._pending.clear()
            if not self._flight:
                self._idle.notify_all()
        return taken

    def running(self) -> list[Claim]:
        # The handlers run in the cluster, not in this process: nothing here for the worker to
        # expire at shutdown. Handed-off attempts are left to the cluster (see stop()).
        return []

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return wait_while(self._idle, lambda: bool(self._flight or self._pending), timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            left = list(self._flight.values())
        if left:
            self._leave_to_cluster(left)

    # -- hand-off ------------------------------------------------------------------------------

    def _reserve(self, claim: Claim) -> _Handoff:
        """Take a slot for ``claim`` (the lock is held)."""
        limit = timeout_for(claim)
        handoff = _Handoff(
            claim=claim,
            handed_at=self.now(),
            limit=limit,
            deadline=time.monotonic() + math.ceil(limit) + DEADLINE_MARGIN,
        )
        self._flight[(claim.alarm_id, claim.number)] = handoff
        return handoff

    def _send(self, handoff: _Handoff) -> bool:
        from django_q.tasks import async_task

        claim = handoff.claim
        try:
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
        except Exception as exc:
            # The broker is down: the claim waits, first in line; its lease is renewed by the
            # worker's heartbeat meanwhile, and it is released at shutdown if still waiting.
            logger.warning(
                "could not enqueue alarm %s attempt %d for the django-q cluster (%r); retrying "
                "in %gs",
                claim.alarm_id,
                claim.number,
                exc,
                HANDOFF_RETRY,
                extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
            )
            with self._lock:
                self._flight.pop((claim.alarm_id, claim.number), None)
                self._pending.appendleft(claim)
                self._retry_at = time.monotonic() + HANDOFF_RETRY
            self._wake.set()
            return False
        return True

    def _fill(self) -> None:
        """Hand waiting claims to the cluster while slots are free."""
        while time.monotonic() >= self._retry_at:
            with self._lock:
                if not self._pending or len(self._flight) >= self.concurrency:
                    return
                handoff = self._reserve(self._pending.popleft())
            if not self._send(handoff):
                return

    # -- watching the rows ---------------------------------------------------------------------

    def _watch(self) -> None:
        delay = POLL_MAX
        failures = 0
        try:
            while not self._stopping.is_set():
                self._wake.wait(delay)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    ended = self._poll()
                    self._fill()
                    failures = 0
                except Exception as exc:
                    # This thread must outlive any error: the worker holds what it hands off
                    # until this thread reports it.
                    failures += 1
                    delay = min(0.25 * 2**failures, 30.0)
                    if isinstance(exc, DatabaseError):
                        logger.warning("could not check the attempts handed off (%s)", exc)
                        close(self.db)
                    else:
                        logger.exception("error while watching the attempts handed off")
                    continue
                delay = POLL_MIN if ended else min(delay * 2, POLL_MAX)
        finally:
            close(self.db)

    def _poll(self) -> int:
        """Report the handed-off attempts that ended, or ran past their deadline."""
        with self._lock:
            flights = list(self._flight.values())
        if not flights:
            return 0
        still: set[tuple[uuid.UUID, int]] = set()
        by_worker: dict[uuid.UUID, list[uuid.UUID]] = {}
        for item in flights:
            by_worker.setdefault(item.claim.worker_id, []).append(item.claim.alarm_id)
        for worker_id, ids in by_worker.items():
            for start in range(0, len(ids), POLL_BATCH):
                still.update(
                    Alarm.objects.using(self.db)
                    .held_by(worker_id)
                    .filter(pk__in=ids[start : start + POLL_BATCH])
                    .values_list("pk", "attempts")
                )
        now = time.monotonic()
        ended: list[_Handoff] = []
        expired: list[_Handoff] = []
        with self._lock:
            for item in flights:
                key = (item.claim.alarm_id, item.claim.number)
                if key not in still:
                    ended.append(item)
                elif item.deadline <= now:
                    expired.append(item)
                else:
                    continue
                self._flight.pop(key, None)
            if not self._flight and not self._pending:
                self._idle.notify_all()
        for item in ended:
            self.on_result(item.claim, None)
        for item in expired:
            self.on_result(item.claim, self._timed_out(item))
        return len(ended) + len(expired)

    def _timed_out(self, item: _Handoff) -> Result:
        claim = item.claim
        logger.warning(
            "alarm %s attempt %d is still running %g s after its %g s timeout (the django-q "
            "process that ran it was killed, or no cluster took it); recording it as timeout",
            claim.alarm_id,
            claim.number,
            DEADLINE_MARGIN,
            item.limit,
            extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
        )
        result = timed_out(claim, item.handed_at, self.now(), item.limit)
        result.error = (
            f"TimeoutError: the django-q cluster did not record the attempt within its "
            f"{item.limit:g} s timeout and {DEADLINE_MARGIN:g} s more (the process that ran it "
            "was killed, or no cluster took the task); recorded by the worker"
        )
        return result

    def _leave_to_cluster(self, left: Sequence[_Handoff]) -> None:
        """Extend the leases of attempts the cluster still runs to cover their time limit, so
        that no worker's rescue sweep takes them over while the cluster may still finish them."""
        grace = alarm_settings.LEASE_GRACE
        try:
            for item in left:
                lease = item.handed_at + timedelta(seconds=math.ceil(item.limit) + DEADLINE_MARGIN)
                get_engine(self.db).extend(
                    worker_id=item.claim.worker_id,
                    ids=[item.claim.alarm_id],
                    lease_until=lease + grace,
                )
        except DatabaseError as exc:
            logger.warning("could not extend the leases of attempts left to the cluster: %s", exc)
        logger.info(
            "leaving %d attempt(s) to the django-q cluster; if it does not record them, they "
            "are recorded as lost when their leases expire",
            len(left),
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

    ``occurrence_at`` is the occurrence a recurring alarm delivers, as the worker decided it
    (its misfire policy may have moved it from the row's). Returns the attempt's outcome, or
    ``"not held"`` when the claim is gone (the worker gave up on the attempt, or the task was
    delivered twice): then nothing runs and nothing is written.
    """
    alias = db or str(alarm_settings.DATABASE)
    claim = _held_claim(alias, uuid.UUID(alarm_id), attempt, uuid.UUID(worker_id))
    if claim is None:
        logger.info(
            "alarm %s attempt %d is no longer held by worker %s; not running it",
            alarm_id,
            attempt,
            worker_id,
            extra={"alarm_id": alarm_id, "attempt": attempt},
        )
        return "not held"
    if occurrence_at is not None:
        claim = replace(claim, occurrence_at=parse_datetime(occurrence_at))
    limit = timeout_for(claim)
    started = timezone.now()
    try:
        result = execute(claim, now=timezone.now)
    except BaseException as exc:
        # django-q2's time limit raises TimeoutException (a SystemExit) inside the handler;
        # a handler may also raise SystemExit or KeyboardInterrupt itself. Record the attempt,
        # then let django-q2 see the exception: it replaces the process.
        _disarm()
        finished = timezone.now()
        if _is_timeout(exc):
            result = timed_out(claim, started, finished, limit)
        else:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            result = Result(Outcome.ERROR, started, finished, error[:ERROR_MAX_LENGTH])
        try:
            _finish(claim, result, alias)
        except Exception:
            logger.exception(
                "could not record alarm %s attempt %d; the worker records it when its deadline "
                "passes",
                claim.alarm_id,
                claim.number,
            )
        raise
    # The time limit is the handler's; recording the answer is not cut short by it.
    _disarm()
    _finish(claim, result, alias)
    return str(result.outcome)


def _held_claim(db: str, alarm_id: uuid.UUID, attempt: int, worker_id: uuid.UUID) -> Claim | None:
    """The claim of this attempt, if ``worker_id`` still holds it. The row is decoded as the
    worker's own claims are (:func:`claims.claims_from`): a payload or schedule that cannot be
    read makes a claim whose attempt fails with that problem, never a task that raises."""
    rows = list(
        stored_values(
            Alarm.objects.using(db).held_by(worker_id, attempt).filter(pk=alarm_id),
            "lease_until",
        )
    )
    return claims_from(rows, worker_id)[0] if rows else None


def _finish(claim: Claim, result: Result, db: str) -> None:
    now = timezone.now()
    completion = decide(claim, result, now=now, worker=_worker_name())
    for item in record([completion], db=db, now=now):  # fenced; logs when no longer held
        log_attempt(item, level_of(item), logger)


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
