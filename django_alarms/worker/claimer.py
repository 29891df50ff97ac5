"""The claimer: which alarms the worker claims, when, and how many.

The main loop asks :meth:`Claimer.claim_due` to claim what is about to fall due, shortly before
its due time (:data:`CLAIM_AHEAD`), together with what falls due just after it
(:data:`CLAIM_GATHER`), in statements of at most :data:`CLAIM_BATCH`. How many it holds at
most follows how fast the worker finishes attempts (:meth:`Claimer.capacity`): free threads
plus about half a second of work, so that a fast worker claims in large batches and a slow one
does not hoard alarms another worker could run now.

A full batch means a crowd is due at once, which every worker has armed: claimed by id, the
workers would all ask for the same ids first and mostly get nothing. So a crowd is *swept*
instead: the earliest due alarms of its handlers that nobody holds, armed here or not (SKIP
LOCKED keeps the workers' rows disjoint), until a sweep comes back short. What is claimed is
held (:class:`~django_alarms.worker.holdings.Holdings`) and put on the ready heap, which the
main loop dispatches at each due time; missed occurrences of recurring alarms are skipped by
their misfire policy.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError

from django_alarms import tracing
from django_alarms.claims import Claim
from django_alarms.conf import alarm_settings
from django_alarms.engines import get_engine
from django_alarms.handlers import registry
from django_alarms.metrics import OFF, WorkerMetrics
from django_alarms.outcomes import catch_up
from django_alarms.supervision import outage
from django_alarms.validation import PRIORITY_MAX
from django_alarms.worker.clock import DbClock
from django_alarms.worker.holdings import Holdings
from django_alarms.worker.timers import Armed, Timers

logger = logging.getLogger("django_alarms.worker")

#: Claim this long before the due time, so that the claim's round trip is not lateness.
CLAIM_AHEAD = timedelta(milliseconds=50)
#: A claim made for the next alarm also takes those due this much later: alarms that fall due
#: a few milliseconds apart are claimed together instead of one round trip each.
CLAIM_GATHER = timedelta(milliseconds=50)
#: The most alarms one claim statement takes.
CLAIM_BATCH = 500

#: A claimed alarm waiting for its due time: ``(monotonic deadline, sequence, claim)`` (a plain
#: tuple: the heap compares thousands of them a second). The int orders claims due at the same
#: instant: priority first, then the order they were claimed in.
Ready = tuple[float, int, Claim]


class Claimer:
    """Claims for worker ``worker_id``: from ``timers`` (what the worker armed) into
    ``holdings`` and the ``ready`` heap. ``rate()`` is the worker's completions per second;
    ``window_end()`` the end of its loaded window (``once`` claims nothing due after it)."""

    def __init__(
        self,
        *,
        db: str,
        worker_id: uuid.UUID,
        clock: DbClock,
        timers: Timers,
        holdings: Holdings,
        ready: list[Ready],
        rearm: queue.SimpleQueue[dict[str, Any]],
        concurrency: int,
        lease_grace: timedelta,
        once: bool,
        stopping: threading.Event,
        rate: Callable[[], float],
        window_end: Callable[[], datetime | None],
        queues: Sequence[str] | None = None,
        metrics: WorkerMetrics = OFF,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.engine = get_engine(db)
        self.worker_id = worker_id
        self.clock = clock
        self.timers = timers
        self.holdings = holdings
        self.ready = ready
        self.rearm = rearm
        self.concurrency = concurrency
        self.lease_grace = lease_grace
        self.once = once
        self.stopping = stopping
        self.rate = rate
        self.window_end = window_end
        #: The queues this worker serves (None: all); every claim statement keeps to them.
        self.queues = list(queues) if queues else None
        #: Crowds being swept: handler time limit -> handlers whose last sweep came back full.
        self.crowds: dict[float, set[str]] = {}
        #: Alarms claimed since the start, and alarms whose row the database refused to claim.
        self.claimed = 0
        self.refused = 0
        #: The times of claim statements that failed on an outage: their commit may have gone
        #: through all the same. What they took is given back once the database answers.
        self._unsure: list[datetime] = []
        self._seq = itertools.count()

    def capacity(self) -> int:
        """How many more claims this worker should hold: free threads plus what it can finish
        in about half a second, so a fast worker claims in large batches and a slow one does
        not hoard alarms that another worker could run now."""
        if self.stopping.is_set():
            return 0
        rate = self.rate()
        # Nothing measured yet: one claim batch.
        allowance = max(self.concurrency * 4, min(int(rate * 0.5), 2000)) if rate else CLAIM_BATCH
        return self.concurrency + allowance - len(self.holdings)

    def give_back(self, unstarted: Sequence[Claim]) -> int:
        """Release claims that never started (the worker is stopping), as they were; returns
        how many the database still had as this worker's."""
        try:
            return self.engine.release(claims=unstarted, now=self.clock.now())
        finally:
            # Not renewed any more either way: unreleased, their leases run out and the
            # rescue gives them back.
            self.holdings.forget([claim.alarm_id for claim in unstarted])

    def claim_due(self) -> None:
        if self._unsure:
            self._release_unsure()
        ahead = CLAIM_AHEAD.total_seconds()
        gather = CLAIM_GATHER.total_seconds()
        while True:
            capacity = self.capacity()
            if capacity <= 0:
                return
            # Claim only when the earliest alarm must be claimed now, and then take the ones
            # due shortly after it too (a steady stream is claimed in groups, not one by one).
            # The timers come first, so that a crowd being swept does not hold back the other
            # alarms that fall due meanwhile.
            upcoming = self.timers.next_deadline()
            now = time.monotonic()
            if upcoming is not None and upcoming <= now + ahead:
                items = self.timers.pop_due(now + ahead + gather, min(capacity, CLAIM_BATCH))
                try:
                    self._claim(items)
                except DatabaseError:
                    # Put back what is not held: nothing was claimed, or the lease recovers it.
                    with self.holdings.lock:
                        for item in items:
                            if item.alarm_id not in self.holdings.claims:
                                self.timers.arm(item)
                    raise
                if len(items) >= CLAIM_BATCH:
                    continue  # more may be due
            if not self.crowds:
                return
            capacity = self.capacity()
            if capacity <= 0 or not self._sweep_crowds(min(capacity, CLAIM_BATCH)):
                return
            # The sweep came back full: a crowd is being swept, and more of it may be free.

    def _claim(self, items: Sequence[Armed]) -> None:
        # A full batch means a crowd is due at once, which every worker has armed: claimed by
        # id, the workers would all ask for the same ids first and mostly get nothing. So the
        # alarms whose lease follows their handler's time limit are then swept instead: the
        # earliest due ones that nobody holds, armed here or not (SKIP LOCKED keeps the
        # workers' rows disjoint). Alarms with a time limit of their own go by id. While a
        # crowd is being swept, its handlers' alarms are left to the sweeps.
        sweep = len(items) >= CLAIM_BATCH
        by_id: dict[float, list[uuid.UUID]] = {}
        swept: dict[float, list[Armed]] = {}
        timeouts = _Timeouts()
        crowds = self.crowds
        for item in items:
            if item.timeout is not None:
                by_id.setdefault(item.timeout, []).append(item.alarm_id)
                continue
            limit = timeouts[item.handler]
            if sweep:
                swept.setdefault(limit, []).append(item)
            elif item.handler not in crowds.get(limit, ()):
                by_id.setdefault(limit, []).append(item.alarm_id)
            # else: a sweep of its crowd takes it, unless another worker has it already.
        now = self.clock.now()
        horizon = now + CLAIM_AHEAD + CLAIM_GATHER
        # Each statement's claims are held at once: should a later statement fail, what the
        # earlier ones claimed is not left running in the database with nobody holding it.
        for limit, ids in by_id.items():
            self._claim_ids(ids, horizon, limit, now)
        for limit, group in swept.items():
            try:
                claimed = self._sweep(group, horizon, limit)
            except DatabaseError as exc:
                if outage(exc):
                    raise
                # The database refuses a row of the crowd: claim the group by id instead,
                # which finds that row and leaves it alone.
                self.crowds.pop(limit, None)
                self._claim_ids([item.alarm_id for item in group], horizon, limit, now)
            else:
                self.hold(claimed, now)

    def _claim_ids(
        self, ids: Sequence[uuid.UUID], horizon: datetime, limit: float, now: datetime
    ) -> None:
        """Claim these alarms and hold what was claimed. A statement that the database refuses
        for another reason than an outage (MariaDB checks a row's stored JSON on every update
        of it, so a payload written around its check makes the row refuse any update) is made
        again in halves, until the row it refuses is found: that alarm is left as it is, with
        an error naming it, and the others are claimed."""
        parts = [list(ids)]
        while parts:
            part = parts.pop()
            try:
                claimed = self._statement(horizon, limit, ids=part, limit=len(part))
            except DatabaseError as exc:
                if outage(exc):
                    raise
                if len(part) > 1:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                    continue
                self.refused += 1
                logger.error(
                    "alarm %s cannot be claimed: the database refuses to update its row (%s); "
                    "it is not delivered until the row is fixed (or the alarm cancelled), and "
                    "is tried again at the next load",
                    part[0],
                    exc,
                    extra={"alarm_id": str(part[0])},
                )
                continue
            # Each statement's claims are held at once: should a later one fail, what this one
            # claimed is not left running in the database with nobody holding it.
            self.hold(claimed, now)

    def _statement(self, horizon: datetime, time_limit: float, **where: Any) -> list[Claim]:
        """One claim statement, made at ``horizon`` with the lease of ``time_limit``; one that
        fails on an outage is remembered: its commit may have gone through all the same."""
        started, wall = time.perf_counter(), time.time_ns()
        try:
            claimed = self.engine.claim(
                worker_id=self.worker_id,
                now=horizon,
                lease_until=self._lease(horizon, time_limit),
                queues=self.queues,
                **where,
            )
        except DatabaseError as exc:
            if outage(exc):
                self._unsure.append(horizon)
            raise
        self.metrics.claimed(len(claimed), time.perf_counter() - started)
        if tracing.on():
            tracing.batch("claim", wall, {"django_alarms.claimed": len(claimed)})
        return claimed

    def _release_unsure(self) -> None:
        """Give back what the claim statements that failed on an outage took all the same (the
        commit went through, and its answer was lost): without this, those alarms would wait
        for their lease to expire and be recorded lost, though nothing ran."""
        now = self.clock.now()
        while self._unsure:
            claimed_at = self._unsure[-1]
            released = self.engine.release_unheld(
                worker_id=self.worker_id,
                claimed_at=claimed_at,
                held=self.holdings,
                now=now,
            )
            self._unsure.pop()
            if released:
                logger.warning(
                    "released %d alarm(s) that a claim statement took although its answer was "
                    "lost (the connection broke after the commit); they are claimed again",
                    released,
                )

    def hold(self, claimed: Sequence[Claim], now: datetime) -> None:
        """Keep what was claimed until its due time (or skip the missed occurrences)."""
        if not claimed:
            return
        self.claimed += len(claimed)
        to_run, to_skip = catch_up(claimed, now=now, on_missed=self.metrics.missed)
        shift = self.clock.shift()
        self.holdings.hold(to_run)
        for ready in to_run:
            # Due at the same instant, a higher priority first; then in the order claimed.
            order = (PRIORITY_MAX - ready.priority) << 40 | next(self._seq)
            heapq.heappush(self.ready, (ready.due_at.timestamp() + shift, order, ready))
        if to_skip:
            # Written after the others are held: should it fail, the skipped ones stay claimed
            # until their lease runs out and the rescue takes them over.
            self.engine.skip(claims=to_skip, now=now)
            for skipped in to_skip:
                if skipped.occurrence_at is not None:
                    self.rearm.put(
                        {
                            "id": skipped.alarm_id,
                            "due_at": skipped.occurrence_at,
                            "handler": skipped.handler,
                            "timeout": skipped.timeout,
                        }
                    )

    def _lease(self, horizon: datetime, limit: float) -> datetime:
        return horizon + timedelta(seconds=limit) + self.lease_grace

    def _sweep(self, group: Sequence[Armed], horizon: datetime, limit: float) -> list[Claim]:
        """Claim as many due alarms of the group's handlers as the group has, whichever they
        are. When the sweep comes back full, the crowd is swept again until a sweep comes back
        short (see :meth:`_sweep_crowds`); the group's alarms that were not taken are let go
        rather than armed again: a later sweep takes them if nobody else has."""
        handlers = {item.handler for item in group}
        claimed = self._sweep_handlers(handlers, horizon, limit, len(group))
        if len(claimed) == len(group):
            # Other due alarms came first (ties, alarms not armed here, or the rows another
            # worker took first): more of the crowd may still be free.
            self.crowds.setdefault(limit, set()).update(handlers)
        # Fewer than asked: no alarm of these handlers is due and free any more, so those of
        # the group not claimed are held by another worker or locked by a transaction that is
        # changing them (the change feed reports the change). As after a claim by id, they are
        # let go.
        return claimed

    def _sweep_handlers(
        self, handlers: set[str], horizon: datetime, limit: float, count: int
    ) -> list[Claim]:
        claimed = self._statement(
            horizon, limit, handlers=sorted(handlers), limit=count, handler_timeout_only=True
        )
        for held in claimed:
            self.timers.disarm(held.alarm_id)  # armed here for a later round: it is ours now
        if len(claimed) < count:
            # Nothing of these handlers is due and free any more: the crowd is over.
            crowd = self.crowds.get(limit)
            if crowd is not None:
                crowd -= handlers
                if not crowd:
                    del self.crowds[limit]
        return claimed

    def _sweep_crowds(self, count: int) -> bool:
        """Sweep on the crowds whose last sweep came back full, as long as they do: in a crowd
        that several workers armed, most of what a worker pops is already held by the others
        (a claim by id of those would get nothing), so its handlers' alarms are left to these
        sweeps. What a sweep takes is disarmed; what others took surfaces from the heap and
        is let go. True if a sweep came back full."""
        now = self.clock.now()
        horizon = now + CLAIM_AHEAD + CLAIM_GATHER
        window_end = self.window_end()
        if self.once and window_end is not None:
            horizon = min(horizon, window_end)  # --once: what was due at the load
        full = False
        for limit, handlers in list(self.crowds.items()):
            claimed = self._sweep_handlers(set(handlers), horizon, limit, count)
            full = full or len(claimed) == count
            self.hold(claimed, now)
        return full


def _handler_timeout(name: str) -> float:
    spec = registry.get(name)
    if spec is not None and spec.timeout is not None:
        return spec.timeout.total_seconds()
    return float(alarm_settings.TIMEOUT.total_seconds())


class _Timeouts(dict[str, float]):
    """:func:`_handler_timeout` by handler name, for one claim round (the registry and the
    settings do not change while it runs)."""

    def __missing__(self, name: str) -> float:
        value = self[name] = _handler_timeout(name)
        return value
