"""The recorder: the worker's thread that writes finished attempts, in batches.

The executor's threads hand each ended attempt to :meth:`Recorder.put`; the recorder's thread
(:meth:`Recorder.run`, under the worker's supervisor) takes them in batches of up to
:data:`RECORD_BATCH`, waiting :data:`RECORD_LINGER` for more when more are about to end, and
writes each batch in one transaction (:func:`delivery.record`). A database outage keeps the
batch for the next try (its claims stay held, and their leases renewed); a batch the database
refuses for another reason is written in halves, so that the attempt it refuses fails alone.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from django.db import close_old_connections

from django_alarms import tracing
from django_alarms.attempt_log import log_attempts
from django_alarms.claims import Claim
from django_alarms.delivery import log_not_held, record, storable_text
from django_alarms.metrics import OFF, WorkerMetrics
from django_alarms.models import Attempt
from django_alarms.outcomes import Completion, Result, decide
from django_alarms.supervision import Supervisor, close, outage
from django_alarms.types import Outcome

logger = logging.getLogger("django_alarms.worker")

#: The most completions one recorder transaction writes.
RECORD_BATCH = 500
#: How long the recorder waits for more attempts to end before it writes a small batch, when
#: more are running or about to start: fewer, larger transactions in a steady stream.
RECORD_LINGER = 0.05


class Recorder:
    """Writes what the executor reports. ``written(completions, applied)`` is called after each
    write (the worker forgets those claims, re-arms what comes due again and counts);
    ``let_go(ids)`` when an attempt cannot be written at all; ``more_soon()`` says whether more
    attempts are about to end (running, or due within :data:`RECORD_LINGER`)."""

    def __init__(
        self,
        *,
        db: str,
        now: Callable[[], datetime],
        worker: str,
        supervisor: Supervisor,
        written: Callable[[Sequence[Completion], Sequence[Completion]], None],
        writing: Callable[[Sequence[uuid.UUID]], None],
        let_go: Callable[[Sequence[uuid.UUID]], None],
        more_soon: Callable[[], bool],
        metrics: WorkerMetrics = OFF,
        started_at: datetime | None = None,
    ) -> None:
        self.db = db
        self.now = now
        self.worker = worker
        self.supervisor = supervisor
        self.written = written
        self.writing = writing
        self.let_go = let_go
        self.more_soon = more_soon
        self.metrics = metrics
        #: When the worker started: the log says which attempts were due before.
        self.started_at = started_at
        self.recorded = 0
        self.fenced = 0
        #: Outcomes found written by this worker's own earlier try (counted as recorded).
        self.already = 0
        #: True when attempts could still not be written at shutdown (the worker exits 1).
        self.gave_up = False
        self._queue: queue.SimpleQueue[tuple[Claim, Result] | None] = queue.SimpleQueue()
        #: Taken from the queue and not written yet. It is the recorder's, not one call's:
        #: when the supervisor runs :meth:`run` again after a fault, these are still written.
        self._unrecorded: list[tuple[Claim, Result]] = []
        self._finished = False

    def put(self, claim: Claim, result: Result) -> None:
        self._queue.put((claim, result))

    def finish(self) -> None:
        """Write what is queued, then end :meth:`run`."""
        self._queue.put(None)

    def done(self) -> bool:
        return self._finished and not self._unrecorded

    def run(self) -> None:
        pending = self._unrecorded
        failures = 0
        while not self._finished or pending:
            if not pending:
                item = self._queue.get()
                if item is None:
                    self._finished = True
                    continue
                pending.append(item)
            self._gather(pending)
            try:
                self.write_apart(pending)
                failures = 0
            except Exception as exc:
                # The database is away (only an outage comes back here): the batch is written
                # when it returns; meanwhile the claims stay held and their leases renewed.
                failures += 1
                delay = min(0.25 * 2**failures, 1.0)
                logger.warning(
                    "could not record %d attempt(s) (%s); retrying in %.1fs",
                    len(pending),
                    exc,
                    delay,
                )
                close(self.db)
                if self._finished and failures > 5:
                    logger.error(
                        "giving up on recording %d attempt(s) at shutdown; their leases will "
                        "expire and they will be delivered again",
                        len(pending),
                    )
                    pending.clear()
                    self.gave_up = True
                    break
                time.sleep(delay)
        close_old_connections()

    def _gather(self, pending: list[tuple[Claim, Result]]) -> None:
        """Add to ``pending`` what ends within the linger, up to a batch."""
        linger_until = time.monotonic() + RECORD_LINGER
        while len(pending) < RECORD_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                # More attempts are about to end (running, or claimed and due within moments):
                # wait a little for them, and write them in one transaction.
                remaining = linger_until - time.monotonic()
                if self._finished or remaining <= 0 or not self.more_soon():
                    return
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return
            if item is None:
                self._finished = True
                return
            pending.append(item)

    def write_apart(self, pending: list[tuple[Claim, Result]]) -> None:
        """Write ``pending`` (emptying it as its parts are written). A batch that fails on
        anything but an outage is written in halves, so that the completion that cannot be
        written is found and fails alone (:meth:`_unrecordable`); an outage is raised, with
        what is left in ``pending``."""
        parts = [list(pending)]
        while parts:
            part = parts.pop()
            try:
                self.write(part)
            except Exception as exc:
                if outage(exc):
                    raise
                close(self.db)
                if len(part) > 1:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                    continue
                self._unrecordable(part[0], exc)
            written = {id(item) for item in part}
            pending[:] = [item for item in pending if id(item) not in written]

    def write(self, pending: Sequence[tuple[Claim, Result]]) -> None:
        """Decide and write one batch, in one transaction."""
        now, wall = self.now(), time.time_ns()
        completions = [decide(c, r, now=now, worker=self.worker) for c, r in pending]
        self.writing([c.alarm_id for c, _ in pending])
        already = self.already
        applied = record(completions, db=self.db, now=now, on_fenced=self._not_written)
        self.recorded += len(applied) + self.already - already
        fenced = len(completions) - len(applied) - (self.already - already)
        self.fenced += fenced
        log_attempts(applied, logger, since=self.started_at)
        self.metrics.recorded(applied)
        self.metrics.fenced(fenced)
        if tracing.on():
            tracing.batch("record", wall, {"django_alarms.recorded": len(applied)})
        self.written(completions, applied)

    def _not_written(self, item: Completion) -> None:
        """A completion that the fenced write did not apply. After an outage it may be this
        worker's own: an earlier try committed, and only its answer was lost. Its Attempt row
        tells (one query, only for such completions)."""
        claim = item.claim
        # The same row as this write's: a rescue's `lost` row names the holder too.
        mine = Attempt.objects.using(self.db).filter(
            alarm_id=claim.alarm_id,
            number=claim.number,
            worker=self.worker,
            outcome=item.result.outcome,
            started_at=item.result.started_at,
        )
        if not mine.exists():
            log_not_held(item)
            return
        self.already += 1
        logger.info(
            "alarm %s attempt %d: recorded already, by this worker's earlier try (the database "
            "committed it, and the answer was lost)",
            claim.alarm_id,
            claim.number,
            extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
        )

    def _unrecordable(self, item: tuple[Claim, Result], exc: Exception) -> None:
        """One attempt's outcome cannot be written (the database refuses a value of it, or the
        decision about it failed): record the attempt as failed with that reason instead. If
        even that fails, the claim is let go: its lease expires and the rescue sweep records it
        as lost and delivers it again, so the alarm is never left running."""
        claim, result = item
        self.supervisor.failed("recording the attempt", exc, alarm_id=claim.alarm_id)
        reason = storable_text(
            f"UnrecordableOutcome: the outcome {result.outcome} of this attempt could not be "
            f"written ({type(exc).__name__}: {exc}); recorded as an error instead"
        )
        plain = Result(Outcome.ERROR, result.started_at, result.finished_at, error=reason)
        try:
            self.write([(claim, plain)])
        except Exception as again:
            if outage(again):
                raise
            self.supervisor.failed("recording it as failed", again, alarm_id=claim.alarm_id)
            logger.error(
                "alarm %s attempt %d: not recorded; it is left to its lease, and the rescue "
                "sweep will deliver it again",
                claim.alarm_id,
                claim.number,
                extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
            )
            self.let_go([claim.alarm_id])
            close(self.db)
