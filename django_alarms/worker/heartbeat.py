"""The heartbeat: the worker's thread that keeps its row and its leases alive.

Every ``HEARTBEAT_INTERVAL`` it renews the worker's row and the leases of every claim the
worker holds (:class:`~django_alarms.worker.holdings.Holdings`), dropping those that another
worker's rescue took over; runs the rescue sweep for leases that expired (every worker does:
there is no leader); and, once a minute, deletes long-dead workers' rows and, on the live
worker with the smallest id, purges old alarms and attempts. After a failed beat (the
database is away) it looks again within a second, and it rescues nothing until a heartbeat
interval after the database came back: the other workers get that long to renew theirs.
The worker's row itself is written here at start-up (:meth:`Heartbeat.register`) and deleted
at the end (:meth:`Heartbeat.unregister`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import close_old_connections

from django_alarms import __version__
from django_alarms.conf import alarm_settings
from django_alarms.delivery import rescue
from django_alarms.engines import get_engine
from django_alarms.metrics import OFF, WorkerMetrics
from django_alarms.supervision import Supervisor
from django_alarms.worker.holdings import Holdings

logger = logging.getLogger("django_alarms.worker")

HOUSEKEEPING_EVERY = 60.0
PURGE_BATCH = 500
DEAD_WORKER_AFTER = timedelta(hours=1)
#: Leases are renewed in statements of at most this many ids.
EXTEND_BATCH = 1000


class Serving(NamedTuple):
    """What a worker runs, as its row shows it: ``handlers`` and ``queues`` empty for all."""

    executor: str = "inline"
    concurrency: int = 1
    handlers: Sequence[str] = ()
    queues: Sequence[str] = ()


#: One inline thread that serves every handler and queue (the default of tests and tools).
EVERYTHING_INLINE = Serving()


class Heartbeat:
    """The heartbeat of worker ``worker_id`` (named ``name``), run by :meth:`run` in a thread
    of its own until ``stopped`` is set; ``stopping`` says the worker no longer claims."""

    def __init__(
        self,
        *,
        db: str,
        worker_id: uuid.UUID,
        name: str,
        holdings: Holdings,
        now: Callable[[], datetime],
        interval: timedelta,
        lease_grace: timedelta,
        supervisor: Supervisor,
        stopping: threading.Event,
        stopped: threading.Event,
        serves: Serving = EVERYTHING_INLINE,
        metrics: WorkerMetrics = OFF,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.engine = get_engine(db)
        self.worker_id = worker_id
        self.name = name
        self.holdings = holdings
        self.now = now
        self.interval = interval
        self.lease_grace = lease_grace
        self.supervisor = supervisor
        self.stopping = stopping
        self.stopped = stopped
        #: What the worker's row says it runs.
        self.serves = serves
        #: Whether the last beat failed, and when beats came back (``time.monotonic()``).
        self._failed = False
        self._connected_since = float("-inf")
        self._last_housekeeping = float("-inf")

    def run(self) -> None:
        while not self.stopped.is_set():
            self.stopped.wait(self.step())
        close_old_connections()

    def step(self) -> float:
        """One round; returns how long to wait for the next."""
        every = self.interval.total_seconds()
        if self.supervisor.step("heartbeat", self.beat) is None:
            # Renew the leases as soon as the database is back (every second at most), not a
            # heartbeat interval later: what this worker holds, and what its recorder waits to
            # write, stays its own.
            self._failed = True
            return min(every, 1.0)
        if self._failed:
            self._failed = False
            self._connected_since = time.monotonic()
        if self.stopping.is_set():
            return every
        # After an outage, other workers' leases may have expired while nobody could renew
        # them: give them a heartbeat interval to renew before taking them over.
        if time.monotonic() - self._connected_since >= every:
            rescued = self.supervisor.step(
                "rescue", lambda: rescue(db=self.db, now=self.now(), worker=self.name)
            )
            self.metrics.rescued(rescued or 0)
        if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_EVERY:
            self._last_housekeeping = time.monotonic()
            self.supervisor.step("housekeeping", self.housekeeping)
        return every

    def register(self) -> None:
        """Write this worker's row (what the admin's worker page and ``first_live_worker``
        read); :meth:`beat` keeps it fresh and :meth:`unregister` deletes it."""
        now = self.now()
        self.engine.register(
            id=self.worker_id,
            name=self.name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            executor=self.serves.executor,
            concurrency=self.serves.concurrency,
            handlers=list(self.serves.handlers),
            queues=list(self.serves.queues),
            started_at=now,
            heartbeat_at=now,
            version=__version__,
        )

    def unregister(self) -> None:
        self.engine.unregister(self.worker_id)

    def beat(self) -> bool:
        """Renew this worker's row and the leases it holds; drop the claims taken over."""
        now = self.now()
        held = self.holdings.ids()
        self.engine.beat(
            worker_id=self.worker_id, now=now, in_flight=len(held), stopping=self.stopping.is_set()
        )
        # Keep the claims this worker holds alive for two more heartbeats: a worker that
        # dies or freezes stops renewing them, and the rescue sweep takes them over.
        lease = now + 2 * self.interval + self.lease_grace
        renewed: dict[uuid.UUID, int] = {}
        for start in range(0, len(held), EXTEND_BATCH):
            renewed.update(
                self.engine.extend(
                    worker_id=self.worker_id,
                    ids=held[start : start + EXTEND_BATCH],
                    lease_until=lease,
                )
            )
        self.holdings.renewed(held, renewed, lease)
        return True

    def housekeeping(self) -> None:
        now = self.now()
        alive_since = now - 3 * self.interval
        self.engine.forget_dead_workers(before=now - max(DEAD_WORKER_AFTER, 10 * self.interval))
        # One worker at a time purges: the live worker with the smallest id.
        if self.engine.first_live_worker(alive_since=alive_since) != self.worker_id:
            return
        # Up to 20 small batches a minute (10,000 rows of each kind), stopping early when
        # there is nothing left: short transactions, and a busy system still keeps up.
        for _ in range(20):
            if self.stopping.is_set() or max(purge(db=self.db, now=now)) < PURGE_BATCH:
                break


def purge(*, db: str, now: datetime, batch: int = PURGE_BATCH) -> tuple[int, int]:
    """Delete succeeded alarms older than KEEP_SUCCEEDED and attempts older than KEEP_ATTEMPTS,
    a small batch at a time so that no long lock is taken."""
    old_alarms, old_attempts = get_engine(db).purge(
        succeeded_before=now - alarm_settings.KEEP_SUCCEEDED,
        attempts_before=now - alarm_settings.KEEP_ATTEMPTS,
        batch=batch,
    )
    if old_alarms or old_attempts:
        logger.info("purged %d succeeded alarm(s) and %d old attempt(s)", old_alarms, old_attempts)
    return old_alarms, old_attempts
