"""What the executors that hand attempts to another engine share (django-q2, Celery).

The worker (``run_alarms``) still loads, arms, claims and fires alarms on time; at the due time
a :class:`RemoteExecutor` sends one small message per attempt, with ids and primitives only
(never a model instance, never the payload). In the engine's process :func:`run_claimed` loads
the row *fenced* on the claim (running, held by that worker, that attempt number), calls the
handler with the same delivery code as the inline executor, and records the
:class:`~django_alarms.models.Attempt` with the same fenced write. The engine never retries
anything: django-alarms owns retries.

The worker learns that an attempt ended by watching the rows: a thread asks, every 20 to 200 ms
and in bounded queries, which of the attempts it handed off are still ``running`` under it with
the same attempt number. Those that are not were recorded by the engine, and the worker stops
holding them. An attempt still running under the worker past its deadline (the engine's time
limit, what the engine's queue may take, and :data:`DEADLINE_MARGIN`) is recorded as
``timeout`` by the worker and retried by the alarm's policy; the fenced write makes a late
record by the engine change nothing, and a message the engine takes after that finds the claim
gone and runs nothing.

``CONCURRENCY`` is how many attempts one worker hands off at once; the others wait in the
worker, in order. At shutdown, claims not handed off are released like the inline executor's
unstarted ones; handed-off attempts are left to the engine with their leases extended to their
deadline, after which any worker's rescue sweep records them as ``lost``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_alarms.attempt_log import level_of, log_attempt
from django_alarms.claims import Claim, claims_from, stored_values
from django_alarms.conf import alarm_settings
from django_alarms.delivery import execute, record, timeout_for
from django_alarms.engines import get_engine
from django_alarms.executors import ResultCallback, wait_while
from django_alarms.models import Alarm
from django_alarms.outcomes import Result, decide, timed_out
from django_alarms.supervision import close

logger = logging.getLogger("django_alarms.executors")

#: Seconds past an attempt's (rounded-up) time limit before the worker records it as a timeout
#: itself: more than the engines' grace between their soft limit and killing the process.
DEADLINE_MARGIN = 5.0
#: The worker looks for ended attempts this often: fast while attempts end, slower when idle.
POLL_MIN = 0.02
POLL_MAX = 0.2
#: The most alarm ids one polling query asks about.
POLL_BATCH = 500
#: Seconds between attempts to send when the broker refused a message.
HANDOFF_RETRY = 1.0


@dataclass(slots=True, eq=False)
class Handoff:
    claim: Claim
    handed_at: datetime  # the worker's clock (the database's), for the Attempt row
    limit: float  # the attempt's time limit, seconds
    deadline: float  # time.monotonic() after which the worker records a timeout


class RemoteExecutor:
    """Send each attempt to an engine; watch the rows to learn when it ended. A subclass says
    how to connect (:meth:`connect`) and send (:meth:`send`), and what the engine is called."""

    name = "remote"
    lead = 0.0
    #: What the log lines call the engine ("the django-q cluster").
    engine = "the engine"
    #: Seconds a message may wait in the engine's queue before its time limit starts (0 when
    #: the engine's time limit counts from the hand-off).
    queue_wait = 0.0

    def __init__(
        self,
        *,
        concurrency: int,
        on_result: ResultCallback,
        now: Callable[[], datetime],
        db: str,
    ) -> None:
        self.concurrency = concurrency
        self.on_result = on_result
        self.now = now
        self.db = db
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: deque[Claim] = deque()
        self._flight: dict[tuple[uuid.UUID, int], Handoff] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._retry_at = 0.0  # monotonic: no hand-off before this, after the broker failed
        self._thread: threading.Thread | None = None

    # -- for subclasses ------------------------------------------------------------------------

    def connect(self) -> None:
        """Open what :meth:`send` uses (a broker connection), in the worker's main thread."""

    def send(self, handoff: Handoff) -> None:
        """Send one attempt to the engine; raise when the broker refuses it."""
        raise NotImplementedError

    # -- Executor protocol ---------------------------------------------------------------------

    def start(self) -> None:
        self.connect()
        self._thread = threading.Thread(target=self._watch, name=f"alarms-{self.name}", daemon=True)
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
        # Only what was never sent: a message in the broker cannot be taken back reliably, and
        # the fence makes it harmless if the engine runs it after the claim is gone.
        with self._lock:
            taken = list(self._pending)
            self._pending.clear()
            if not self._flight:
                self._idle.notify_all()
        return taken

    def running(self) -> list[Claim]:
        # The handlers run in the engine, not in this process: nothing here for the worker to
        # expire at shutdown. Handed-off attempts are left to the engine (see stop()).
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
            self._leave_to_engine(left)

    # -- hand-off ------------------------------------------------------------------------------

    def _reserve(self, claim: Claim) -> Handoff:
        """Take a slot for ``claim`` (the lock is held)."""
        limit = timeout_for(claim)
        handoff = Handoff(
            claim=claim,
            handed_at=self.now(),
            limit=limit,
            deadline=time.monotonic() + self._allowed(limit),
        )
        self._flight[(claim.alarm_id, claim.number)] = handoff
        return handoff

    def _allowed(self, limit: float) -> float:
        """Seconds from the hand-off until the worker records the attempt as a timeout."""
        return self.queue_wait + math.ceil(limit) + DEADLINE_MARGIN

    def _send(self, handoff: Handoff) -> bool:
        claim = handoff.claim
        try:
            self.send(handoff)
        except Exception as exc:
            # The broker is down: the claim waits, first in line; its lease is renewed by the
            # worker's heartbeat meanwhile, and it is released at shutdown if still waiting.
            logger.warning(
                "could not send alarm %s attempt %d to %s (%r); retrying in %gs",
                claim.alarm_id,
                claim.number,
                self.engine,
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
        """Hand waiting claims to the engine while slots are free."""
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
        ended: list[Handoff] = []
        expired: list[Handoff] = []
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

    def _timed_out(self, item: Handoff) -> Result:
        claim = item.claim
        allowed = self._allowed(item.limit)
        logger.warning(
            "alarm %s attempt %d was not recorded by %s %g s after it was handed off (its "
            "timeout is %g s); recording it as timeout",
            claim.alarm_id,
            claim.number,
            self.engine,
            allowed,
            item.limit,
            extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
        )
        result = timed_out(claim, item.handed_at, self.now(), item.limit)
        result.error = (
            f"TimeoutError: {self.engine} did not record the attempt within {allowed:g} s of "
            f"the hand-off (its timeout is {item.limit:g} s: the process that ran it was "
            "killed, or no process took the message); recorded by the worker"
        )
        return result

    def _leave_to_engine(self, left: Sequence[Handoff]) -> None:
        """Extend the leases of attempts the engine still runs to cover their deadline, so that
        no worker's rescue sweep takes them over while the engine may still finish them."""
        grace = alarm_settings.LEASE_GRACE
        try:
            for item in left:
                lease = item.handed_at + timedelta(seconds=self._allowed(item.limit))
                get_engine(self.db).extend(
                    worker_id=item.claim.worker_id,
                    ids=[item.claim.alarm_id],
                    lease_until=lease + grace,
                )
        except DatabaseError as exc:
            logger.warning(
                "could not extend the leases of attempts left to %s: %s", self.engine, exc
            )
        logger.info(
            "leaving %d attempt(s) to %s; if it does not record them, they are recorded as "
            "lost when their leases expire",
            len(left),
            self.engine,
        )


# -- in the engine's process ------------------------------------------------------------------


def run_claimed(
    alarm_id: str,
    attempt: int,
    worker_id: str,
    *,
    occurrence_at: str | None,
    db: str | None,
    recorded_by: str,
    on_raised: Callable[[Claim, BaseException, datetime, float], Result],
    answered: Callable[[Claim, Result, float], Result] = lambda claim, result, limit: result,
) -> str:
    """Run one claimed attempt in an engine's process and record it (fenced).

    ``occurrence_at`` is the occurrence a recurring alarm delivers, as the worker decided it
    (its misfire policy may have moved it from the row's). ``on_raised(claim, exc, started,
    limit)`` turns what escaped the delivery (the engine's own time limit, a ``SystemExit``)
    into the result to record, which is recorded before the exception goes on to the engine;
    ``answered(claim, result, limit)`` may turn a result into another (a soft time limit the
    handler let through as an exception is a timeout). Returns the outcome, or ``"not held"``
    when the claim is gone (the worker gave up on the attempt, or the message came twice):
    then nothing runs and nothing is written.
    """
    alias = db or str(alarm_settings.DATABASE)
    claim = held_claim(alias, uuid.UUID(alarm_id), attempt, uuid.UUID(worker_id))
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
        result = on_raised(claim, exc, started, limit)
        try:
            finish(claim, result, alias, recorded_by)
        except Exception:
            logger.exception(
                "could not record alarm %s attempt %d; the worker records it when its deadline "
                "passes",
                claim.alarm_id,
                claim.number,
            )
        raise
    result = answered(claim, result, limit)
    finish(claim, result, alias, recorded_by)
    return str(result.outcome)


def held_claim(db: str, alarm_id: uuid.UUID, attempt: int, worker_id: uuid.UUID) -> Claim | None:
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


def finish(claim: Claim, result: Result, db: str, recorded_by: str) -> None:
    now = timezone.now()
    completion = decide(claim, result, now=now, worker=recorded_by)
    for item in record([completion], db=db, now=now):  # fenced; logs when no longer held
        log_attempt(item, level_of(item), logger)
