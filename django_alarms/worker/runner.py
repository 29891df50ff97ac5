"""The worker loop: load, arm, claim shortly before the due time, fire on time, record, recover.

Threads of one worker process:

- the *main* thread (:meth:`Runner.run`): loads the window, follows the change feed, claims
  what is about to fall due and hands each claim to the executor at its due time, waking
  exactly when the next thing must happen (no busy polling);
- the executor's threads run handlers (:mod:`django_alarms.executors.inline`);
- the *recorder* writes finished attempts in batches (one transaction per batch);
- the *heartbeat* renews this worker's row and the leases of what it holds, runs the rescue
  sweep for expired leases (every worker does: there is no leader) and the housekeeping;
- on PostgreSQL the *listener* waits for NOTIFY and wakes the main thread.

Each thread uses its own database connection (Django's are per thread). No transaction is
held open while a handler runs: claims and completions are short transactions of their own.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)

from django_alarms import __version__
from django_alarms.claims import Claim, claim, extend, release
from django_alarms.conf import alarm_settings
from django_alarms.delivery import (
    Completion,
    Result,
    catch_up,
    decide,
    record,
    rescue,
    skip,
    storable_text,
    timeout_for,
)
from django_alarms.executors import get_executor
from django_alarms.handlers import registry
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.supervision import MAX_BACKOFF, Supervisor
from django_alarms.types import Outcome, State
from django_alarms.worker.clock import DbClock
from django_alarms.worker.loader import Listener, Loader
from django_alarms.worker.timers import Armed, Timers

logger = logging.getLogger("django_alarms.worker")
T = TypeVar("T")

#: Claim this long before the due time, so that the claim's round trip is not lateness.
CLAIM_AHEAD = timedelta(milliseconds=50)
#: A claim made for the next alarm also takes those due this much later: alarms that fall due
#: a few milliseconds apart are claimed together instead of one round trip each.
CLAIM_GATHER = timedelta(milliseconds=50)
#: The most alarms one claim statement takes.
CLAIM_BATCH = 500
#: The most completions one recorder transaction writes.
RECORD_BATCH = 500
#: How long the recorder waits for more attempts to end before it writes a small batch, when
#: more are running or about to start: fewer, larger transactions in a steady stream.
RECORD_LINGER = 0.05
#: Changes are looked for this far back from the last poll, for transactions that committed
#: after that poll although they wrote their rows before it.
FEED_OVERLAP = timedelta(seconds=5)
#: How often a worker on SQLite asks whether another connection committed (PRAGMA
#: data_version, which reads no table), to find new alarms sooner than POLL_INTERVAL.
SQLITE_WATCH_INTERVAL = 0.1
#: A held claim starts only while its lease reaches this far past the database's clock (as
#: this worker estimates it): room for the estimate's error and the other workers'.
START_MARGIN = timedelta(milliseconds=500)
HOUSEKEEPING_EVERY = 60.0
PURGE_BATCH = 500
DEAD_WORKER_AFTER = timedelta(hours=1)


@dataclass(slots=True)
class Options:
    db: str
    concurrency: int
    executor: str
    handlers: tuple[str, ...] | None
    load_interval: timedelta
    poll_interval: timedelta
    max_in_memory: int
    heartbeat_interval: timedelta
    lease_grace: timedelta
    shutdown_timeout: float = 30.0
    once: bool = False

    @classmethod
    def from_settings(cls, **overrides: Any) -> Options:
        values: dict[str, Any] = {
            "db": str(alarm_settings.DATABASE),
            "concurrency": alarm_settings.CONCURRENCY,
            "executor": alarm_settings.EXECUTOR,
            "handlers": None,
            "load_interval": alarm_settings.LOAD_INTERVAL,
            "poll_interval": alarm_settings.POLL_INTERVAL,
            "max_in_memory": alarm_settings.MAX_IN_MEMORY,
            "heartbeat_interval": alarm_settings.HEARTBEAT_INTERVAL,
            "lease_grace": alarm_settings.LEASE_GRACE,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


#: A claimed alarm waiting for its due time: ``(monotonic deadline, sequence, claim)`` (a plain
#: tuple: the heap compares thousands of them a second).
_Ready = tuple[float, int, Claim]


class Runner:
    """One worker process. Drive it with :meth:`run`; stop it with :meth:`request_stop`."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.db = options.db
        self.id = uuid.uuid4()
        self.name = f"{socket.gethostname()}:{os.getpid()}:{self.id.hex[:6]}"
        self.clock = DbClock(self.db)
        self.loader = Loader(self.db, options.handlers)
        self.timers = Timers()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self._ready: list[_Ready] = []
        self._seq = itertools.count()
        self._held: dict[uuid.UUID, Claim] = {}
        #: The lease of each held claim as last written (by the claim or a renewal), by the
        #: database's clock: a claim whose lease has passed is never started.
        self._leases: dict[uuid.UUID, datetime] = {}
        #: Crowds being swept: handler time limit -> handlers whose last sweep came back full.
        self._crowds: dict[float, set[str]] = {}
        self._held_lock = threading.Lock()
        self._results: queue.SimpleQueue[tuple[Claim, Result] | None] = queue.SimpleQueue()
        self._pending_results = 0
        self._rearm: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._changes_pending = threading.Event()
        self._window_end: datetime | None = None
        self._window_capped = False
        self._last_poll: datetime | None = None
        self._rate = 0.0  # completions per second, smoothed: sizes the claims
        self._rate_mark = (time.monotonic(), 0)
        self._completed = 0
        self._listener: Listener | None = None
        #: 0, or 1 when the worker stopped because it could not go on (a thread met an error
        #: that is not an ``Exception``, or attempts could not be recorded at shutdown).
        self.exit_code = 0
        self.supervisor = Supervisor(on_error=lambda: _close(self.db), on_fatal=self._fatal)
        #: Finished attempts the recorder has taken and not written yet (kept on the runner,
        #: so that a recorder body that is run again after a fault still writes them).
        self._unrecorded: list[tuple[Claim, Result]] = []
        self._recorder_finished = False
        #: Whether the last heartbeat failed, and when beats came back (``time.monotonic()``):
        #: after an outage this worker does not rescue others' leases until they had a heartbeat
        #: interval to renew them, as it has.
        self._beat_failed = False
        self._connected_since = float("-inf")
        self._last_housekeeping = float("-inf")
        self.executor = get_executor(
            options.executor,
            concurrency=options.concurrency,
            on_result=self._on_result,
            now=self.clock.now,
            db=self.db,
            may_start=self.may_start,
            supervisor=self.supervisor,
        )
        self._recorder = self.supervisor.thread(
            "alarms-recorder",
            self._record_loop,
            done=lambda: self._recorder_finished and not self._unrecorded,
            wait=time.sleep,
            daemon=False,
        )
        self._heartbeat = self.supervisor.thread(
            "alarms-heartbeat",
            self._heartbeat_loop,
            done=self.stopped.is_set,
            wait=self.stopped.wait,
        )
        self.stats = {"claimed": 0, "recorded": 0, "fenced": 0, "loads": 0, "dropped": 0}

    # -- public -----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; in-flight attempts finish within ``shutdown_timeout``."""
        if not self.stopping.is_set():
            logger.info("stopping: no new claims; waiting for attempts in flight")
        self.stopping.set()
        self.wake.set()

    def run(self) -> int:
        """Run until stopped (or, with ``once``, until what was due has been delivered).

        Returns the exit code: 0, or 1 when the worker stopped because it could not go on."""
        self._start()
        try:
            self.supervisor.run(
                "main loop", self._loop, done=self.stopping.is_set, wait=self.stopping.wait
            )
        finally:
            self._shutdown()
        return self.exit_code

    def _fatal(self, what: str, exc: BaseException) -> None:
        """A thread cannot go on: stop the worker (what it holds is released) and exit 1."""
        self.exit_code = 1
        self.request_stop()

    # -- start and stop ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._retrying("start", self._register)
        self._retrying("clock", self.clock.sync)
        self.executor.start()
        self._recorder.start()
        self._heartbeat.start()
        if connections[self.db].vendor == "postgresql" and not self.options.once:
            if _psycopg3(self.db):
                self._listener = Listener(self.db, self._on_notify, self.supervisor)
                self._listener.start()
            else:
                logger.warning("LISTEN/NOTIFY needs psycopg 3; polling every POLL_INTERVAL")
        logger.info(
            "worker %s started: executor=%s concurrency=%d load_interval=%gs poll_interval=%gs "
            "max_in_memory=%d heartbeat=%gs lease_grace=%gs handlers=%s database=%s (%s)%s",
            self.name,
            self.executor.name,
            self.options.concurrency,
            self.options.load_interval.total_seconds(),
            self.options.poll_interval.total_seconds(),
            self.options.max_in_memory,
            self.options.heartbeat_interval.total_seconds(),
            self.options.lease_grace.total_seconds(),
            ",".join(self.options.handlers)
            if self.options.handlers
            else f"all registered ({len(registry)})",
            self.db,
            connections[self.db].vendor,
            " once" if self.options.once else "",
        )

    def _register(self) -> None:
        now = self.clock.now()
        Worker.objects.using(self.db).create(
            id=self.id,
            name=self.name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            executor=self.options.executor,
            concurrency=self.options.concurrency,
            handlers=list(self.options.handlers or []),
            started_at=now,
            heartbeat_at=now,
            version=__version__,
        )

    def _shutdown(self) -> None:
        self.stopping.set()
        if self._listener is not None:
            self._listener.stop()
        # Claimed but never started: give them back, as they were.
        unstarted = [item[2] for item in self._ready] + self.executor.take_unstarted()
        self._ready.clear()
        if unstarted:
            released = (
                self._guard(
                    "release", lambda: release(db=self.db, claims=unstarted, now=self.clock.now())
                )
                or 0
            )
            self._forget([item.alarm_id for item in unstarted])
            logger.info("released %d claimed alarm(s) that had not started", released)
        if not self.executor.wait_idle(self.options.shutdown_timeout):
            running = self.executor.running()
            logger.warning(
                "%d attempt(s) still running after %gs; leaving them to the lease (another "
                "worker will record them as lost and deliver them again)",
                len(running),
                self.options.shutdown_timeout,
            )
            # Expire their leases now so that the rescue does not wait for the full timeout.
            self._guard("expire", lambda: self._expire(running))
        self.executor.stop()
        self._results.put(None)
        self._recorder.join(timeout=self.options.shutdown_timeout + 10)
        self.stopped.set()
        self._guard("unregister", self._unregister)
        close_old_connections()
        logger.info(
            "worker %s stopped: %d claimed, %d recorded, %d fenced off",
            self.name,
            self.stats["claimed"],
            self.stats["recorded"],
            self.stats["fenced"],
        )

    def _expire(self, claims: Sequence[Claim]) -> None:
        now = self.clock.now()
        for item in claims:
            Alarm.objects.using(self.db).filter(
                pk=item.alarm_id, state=State.RUNNING, claimed_by=self.id, attempts=item.attempt
            ).update(lease_until=now)

    def _unregister(self) -> None:
        Worker.objects.using(self.db).filter(pk=self.id).delete()

    # -- the main loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        opts = self.options
        load_every = opts.load_interval.total_seconds()
        poll_every = opts.poll_interval.total_seconds()
        ahead = CLAIM_AHEAD.total_seconds()
        next_load = 0.0
        next_poll = 0.0
        # SQLite has no NOTIFY, but it says cheaply whether another connection committed:
        # watch that often, and run the change feed when it did (a poll in all but the cost).
        watching = not opts.once and connections[self.db].vendor == "sqlite"
        next_watch = 0.0 if watching else float("inf")
        data_version: int | None = None
        failures = 0
        while not self.stopping.is_set():
            self.wake.clear()
            now = time.monotonic()
            try:
                if watching and now >= next_watch:
                    current = _data_version(self.db)
                    if data_version is not None and current != data_version:
                        self._changes_pending.set()
                    data_version = current
                    next_watch = now + SQLITE_WATCH_INTERVAL
                if now >= next_load:
                    self._load()
                    next_load = now + (min(load_every, 1.0) if self._window_capped else load_every)
                    next_poll = now + poll_every
                elif not opts.once and (self._changes_pending.is_set() or now >= next_poll):
                    self._changes_pending.clear()
                    self._poll()
                    next_poll = now + poll_every
                self._take_rearms()
                self._claim_due()
                failures = 0
            except Exception as exc:
                # A database error is looked at again every second at most: delivery resumes
                # within a second of the database coming back. Anything else is a fault of
                # ours (logged with its traceback) or of a stored row: backed off further.
                failures += 1
                cap = 1.0 if isinstance(exc, DatabaseError) else MAX_BACKOFF
                delay = min(0.25 * 2**failures, cap)
                self.supervisor.failed("main loop", exc)
                logger.warning("main loop: retrying in %.1fs", delay)
                self.stopping.wait(delay)
                continue
            self._dispatch()
            if opts.once and self._done():
                break
            deadlines = [next_load, next_poll if not opts.once else next_load, next_watch]
            if self._ready:
                deadlines.append(self._ready[0][0] - self.executor.lead)
            upcoming = self.timers.next_deadline()
            if self._crowds and self._capacity() > 0:
                deadlines.append(now)  # a crowd is still being swept
            if upcoming is not None and self._capacity() > 0:
                deadlines.append(upcoming - ahead)
            elif opts.once:
                deadlines.append(now + 0.05)
            timeout = min(deadlines) - time.monotonic()
            if timeout > 0:
                self.wake.wait(timeout)

    def _done(self) -> bool:
        with self._held_lock:
            held = len(self._held)
        return (
            not held
            and not len(self.timers)
            and not self._ready
            and not self._crowds
            and self._rearm.empty()
        )

    # -- loading ----------------------------------------------------------------------------------

    def _load(self) -> None:
        """Arm the alarms due before now + 2 x LOAD_INTERVAL (overdue ones too)."""
        self.clock.sync()
        now = self.clock.now()
        # --once delivers what is due now; a running worker arms two intervals ahead.
        until = now if self.options.once else now + 2 * self.options.load_interval
        room = max(self.options.max_in_memory - self._occupied(), 0)
        rows = self.loader.window(until, room) if room else []
        self._window_capped = room == 0 or len(rows) >= room
        # When capped, the window ends at the last alarm loaded: later ones wait for room.
        self._window_end = rows[-1]["due_at"] if self._window_capped and rows else until
        if self._window_capped and not rows:
            self._window_end = now
        armed = self._arm(rows)
        self._last_poll = now
        self.stats["loads"] += 1
        self.timers.compact()
        if armed or logger.isEnabledFor(logging.DEBUG):
            logger.log(
                logging.INFO if armed else logging.DEBUG,
                "loaded %d alarm(s) due before %s (%d newly armed, %d armed in all%s)",
                len(rows),
                self._window_end.isoformat(timespec="seconds"),
                armed,
                len(self.timers),
                ", window capped by MAX_IN_MEMORY" if self._window_capped else "",
            )

    def _poll(self) -> None:
        """Arm alarms scheduled or moved since the last look (the change feed)."""
        if self._window_end is None or self._last_poll is None:
            return
        now = self.clock.now()
        since = self._last_poll - FEED_OVERLAP
        room = max(self.options.max_in_memory - self._occupied(), 0)
        rows = self.loader.changes(since, self._window_end, max(room, 1)) if room else []
        self._last_poll = now
        armed = self._arm(rows)
        if armed:
            logger.debug("change feed armed %d alarm(s)", armed)

    def _occupied(self) -> int:
        with self._held_lock:
            return len(self.timers) + len(self._held)

    def _arm(self, rows: Sequence[dict[str, Any]]) -> int:
        armed = 0
        shift = self.clock.shift()
        with self._held_lock:
            held = self._held
            armed_now = self.timers.get
            for row in rows:
                if row["id"] in held:
                    continue  # claimed by this worker already
                current = armed_now(row["id"])
                if current is not None and current.due_at == row["due_at"]:
                    continue  # armed already, at that time (a feed overlap reads it again)
                item = Armed(
                    alarm_id=row["id"],
                    due_at=row["due_at"],
                    deadline=row["due_at"].timestamp() + shift,
                    handler=row["handler"],
                    timeout=row["timeout"],
                )
                armed += self.timers.arm(item)
        return armed

    def _on_notify(self) -> None:
        self._changes_pending.set()
        self.wake.set()

    def _take_rearms(self) -> None:
        """Arm the retries and next occurrences that this worker's own attempts produced."""
        rows = []
        while True:
            try:
                rows.append(self._rearm.get_nowait())
            except queue.Empty:
                break
        if rows:
            self._arm(rows)

    # -- claiming and firing ----------------------------------------------------------------------

    def _capacity(self) -> int:
        """How many more claims this worker should hold: free threads plus what it can finish
        in about half a second, so a fast worker claims in large batches and a slow one does
        not hoard alarms that another worker could run now."""
        if self.stopping.is_set():
            return 0
        if self._rate:
            allowance = max(self.options.concurrency * 4, min(int(self._rate * 0.5), 2000))
        else:  # nothing measured yet: one claim batch
            allowance = CLAIM_BATCH
        with self._held_lock:
            held = len(self._held)
        return self.options.concurrency + allowance - held

    def _claim_due(self) -> None:
        ahead = CLAIM_AHEAD.total_seconds()
        gather = CLAIM_GATHER.total_seconds()
        while True:
            capacity = self._capacity()
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
                    with self._held_lock:
                        for item in items:
                            if item.alarm_id not in self._held:
                                self.timers.arm(item)
                    raise
                if len(items) >= CLAIM_BATCH:
                    continue  # more may be due
            if not self._crowds:
                return
            capacity = self._capacity()
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
        crowds = self._crowds
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
            claimed = claim(
                db=self.db,
                worker_id=self.id,
                now=horizon,
                lease_until=self._lease(horizon, limit),
                ids=ids,
                limit=len(ids),
            )
            self._hold(claimed, now)
        for limit, group in swept.items():
            self._hold(self._sweep(group, horizon, limit), now)

    def _hold(self, claimed: Sequence[Claim], now: datetime) -> None:
        """Keep what was claimed until its due time (or skip the missed occurrences)."""
        if not claimed:
            return
        self.stats["claimed"] += len(claimed)
        to_run, to_skip = catch_up(claimed, now=now)
        shift = self.clock.shift()
        with self._held_lock:
            for held in to_run:
                self._held[held.alarm_id] = held
                self._leases[held.alarm_id] = held.lease_until
        for ready in to_run:
            heapq.heappush(self._ready, (ready.due_at.timestamp() + shift, next(self._seq), ready))
        if to_skip:
            # Written after the others are held: should it fail, the skipped ones stay claimed
            # until their lease runs out and the rescue takes them over.
            skip(db=self.db, claims=to_skip, now=now)
            for skipped in to_skip:
                if skipped.occurrence_at is not None:
                    self._rearm.put(
                        {
                            "id": skipped.alarm_id,
                            "due_at": skipped.occurrence_at,
                            "handler": skipped.handler,
                            "timeout": skipped.timeout,
                        }
                    )

    def _lease(self, horizon: datetime, limit: float) -> datetime:
        return horizon + timedelta(seconds=limit) + self.options.lease_grace

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
            self._crowds.setdefault(limit, set()).update(handlers)
        # Fewer than asked: no alarm of these handlers is due and free any more, so those of
        # the group not claimed are held by another worker or locked by a transaction that is
        # changing them (the change feed reports the change). As after a claim by id, they are
        # let go.
        return claimed

    def _sweep_handlers(
        self, handlers: set[str], horizon: datetime, limit: float, count: int
    ) -> list[Claim]:
        claimed = claim(
            db=self.db,
            worker_id=self.id,
            now=horizon,
            lease_until=self._lease(horizon, limit),
            handlers=sorted(handlers),
            limit=count,
            handler_timeout_only=True,
        )
        for held in claimed:
            self.timers.disarm(held.alarm_id)  # armed here for a later round: it is ours now
        if len(claimed) < count:
            # Nothing of these handlers is due and free any more: the crowd is over.
            crowd = self._crowds.get(limit)
            if crowd is not None:
                crowd -= handlers
                if not crowd:
                    del self._crowds[limit]
        return claimed

    def _sweep_crowds(self, count: int) -> bool:
        """Sweep on the crowds whose last sweep came back full, as long as they do: in a crowd
        that several workers armed, most of what a worker pops is already held by the others
        (a claim by id of those would get nothing), so its handlers' alarms are left to these
        sweeps. What a sweep takes is disarmed; what others took surfaces from the heap and
        is let go. True if a sweep came back full."""
        now = self.clock.now()
        horizon = now + CLAIM_AHEAD + CLAIM_GATHER
        if self.options.once and self._window_end is not None:
            horizon = min(horizon, self._window_end)  # --once: what was due at the load
        full = False
        for limit, handlers in list(self._crowds.items()):
            claimed = self._sweep_handlers(set(handlers), horizon, limit, count)
            full = full or len(claimed) == count
            self._hold(claimed, now)
        return full

    def _dispatch(self) -> None:
        """Hand every claimed alarm whose time has come to the executor."""
        lead = self.executor.lead
        until = time.monotonic() + lead
        ready = self._ready
        while ready and ready[0][0] <= until:
            deadline, _, item = heapq.heappop(ready)
            self.executor.submit(item, at=deadline if lead else None)

    # -- results ----------------------------------------------------------------------------------

    def _on_result(self, claim: Claim, result: Result | None) -> None:
        """Called by the executor when an attempt ends. ``None``: the executor recorded the
        attempt itself (django-q workers do), so the worker only stops holding the claim."""
        if result is None:
            self.stats["recorded"] += 1
            self._forget([claim.alarm_id])
            self._count(1)
            self.wake.set()
            return
        self._results.put((claim, result))

    def _record_loop(self) -> None:
        # ``pending`` is the runner's list, not this call's: when the supervisor runs this
        # body again after a fault, what was taken from the queue is still written.
        pending = self._unrecorded
        failures = 0
        while not self._recorder_finished or pending:
            if not pending:
                item = self._results.get()
                if item is None:
                    self._recorder_finished = True
                    continue
                pending.append(item)
            linger_until = time.monotonic() + RECORD_LINGER
            while len(pending) < RECORD_BATCH:
                try:
                    item = self._results.get_nowait()
                except queue.Empty:
                    # More attempts are about to end (running, or claimed and due within
                    # moments): wait a little for them, and write them in one transaction.
                    remaining = linger_until - time.monotonic()
                    if self._recorder_finished or remaining <= 0 or not self._more_results_soon():
                        break
                    try:
                        item = self._results.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is None:
                    self._recorder_finished = True
                    break
                pending.append(item)
            try:
                self._record_apart(pending)
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
                _close(self.db)
                if self._recorder_finished and failures > 5:
                    logger.error(
                        "giving up on recording %d attempt(s) at shutdown; their leases will "
                        "expire and they will be delivered again",
                        len(pending),
                    )
                    pending.clear()
                    self.exit_code = 1
                    break
                time.sleep(delay)
        close_old_connections()

    def _record_apart(self, pending: list[tuple[Claim, Result]]) -> None:
        """Write ``pending`` (emptying it as its parts are written). A batch that fails on
        anything but an outage is written in halves, so that the completion that cannot be
        written is found and fails alone (:meth:`_unrecordable`); an outage is raised, with
        what is left in ``pending``."""
        parts = [list(pending)]
        while parts:
            part = parts.pop()
            try:
                self._record(part)
            except Exception as exc:
                if _outage(exc):
                    raise
                _close(self.db)
                if len(part) > 1:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                    continue
                self._unrecordable(part[0], exc)
            written = {id(item) for item in part}
            pending[:] = [item for item in pending if id(item) not in written]

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
            self._record([(claim, plain)])
        except Exception as again:
            if _outage(again):
                raise
            self.supervisor.failed(
                "recording the attempt as failed", again, alarm_id=claim.alarm_id
            )
            logger.error(
                "alarm %s attempt %d: not recorded; it is left to its lease, and the rescue "
                "sweep will deliver it again",
                claim.alarm_id,
                claim.attempt,
                extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
            )
            self._forget([claim.alarm_id])
            _close(self.db)

    def _more_results_soon(self) -> bool:
        """Attempts are running, or one is claimed and due within RECORD_LINGER (read from
        the recorder thread: the main thread may empty the heap meanwhile)."""
        if self.executor.held() > 0:
            return True
        try:
            first = self._ready[0][0]
        except IndexError:
            return False
        return first - time.monotonic() < RECORD_LINGER

    def _record(self, pending: Sequence[tuple[Claim, Result]]) -> None:
        now = self.clock.now()
        completions = [decide(c, r, now=now, worker=self.name) for c, r in pending]
        applied = record(completions, db=self.db, now=now)
        self.stats["recorded"] += len(applied)
        self.stats["fenced"] += len(completions) - len(applied)
        self._forget([c.claim.alarm_id for c in completions])
        self._count(len(completions))
        _log_attempts(applied)
        for item in applied:
            if item.state == State.SCHEDULED and item.due_at is not None:
                window_end = self._window_end
                if window_end is not None and item.due_at < window_end:
                    self._rearm.put(
                        {
                            "id": item.claim.alarm_id,
                            "due_at": item.due_at,
                            "handler": item.claim.handler,
                            "timeout": item.claim.timeout,
                        }
                    )
        self.wake.set()

    def _forget(self, ids: Sequence[uuid.UUID]) -> None:
        with self._held_lock:
            for alarm_id in ids:
                self._held.pop(alarm_id, None)
                self._leases.pop(alarm_id, None)

    def may_start(self, claim: Claim) -> bool:
        """Whether the attempt of ``claim`` may start now: this worker still holds the claim
        and its lease has not passed by the database's clock (less a margin for the clocks'
        error). A worker that froze, or lost its database, for longer than a lease finds its
        queued claims expired when it wakes; another worker may have delivered them meanwhile,
        so they are dropped, never started (their leases are left to the rescue sweep)."""
        with self._held_lock:
            held = self._held.get(claim.alarm_id)
            lease = self._leases.get(claim.alarm_id)
            mine = held is not None and held.attempt == claim.attempt
            if mine and lease is not None and lease - START_MARGIN > self.clock.now():
                return True
            if mine:
                self._held.pop(claim.alarm_id, None)
                self._leases.pop(claim.alarm_id, None)
        logger.warning(
            "alarm %s attempt %d: not started, its lease expired before it could start (this "
            "worker froze or lost its database); the rescue sweep delivers it again",
            claim.alarm_id,
            claim.attempt,
            extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
        )
        self.stats["dropped"] += 1
        self.wake.set()
        return False

    def _count(self, n: int) -> None:
        self._completed += n
        mark, count = self._rate_mark
        now = time.monotonic()
        if now - mark >= 0.2:
            current = (self._completed - count) / (now - mark)
            self._rate = current if self._rate == 0 else 0.5 * self._rate + 0.5 * current
            self._rate_mark = (now, self._completed)

    # -- heartbeat, rescue, housekeeping ----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self.stopped.is_set():
            self.stopped.wait(self._heartbeat_step())
        close_old_connections()

    def _heartbeat_step(self) -> float:
        """One round of the heartbeat thread; returns how long to wait for the next."""
        every = self.options.heartbeat_interval.total_seconds()
        if self._guard("heartbeat", self._beat) is None:
            # Renew the leases as soon as the database is back (every second at most), not a
            # heartbeat interval later: what this worker holds, and what its recorder waits to
            # write, stays its own.
            self._beat_failed = True
            return min(every, 1.0)
        if self._beat_failed:
            self._beat_failed = False
            self._connected_since = time.monotonic()
        if self.stopping.is_set():
            return every
        # After an outage, other workers' leases may have expired while nobody could renew
        # them: give them a heartbeat interval to renew before taking them over.
        if time.monotonic() - self._connected_since >= every:
            self._guard(
                "rescue", lambda: rescue(db=self.db, now=self.clock.now(), worker=self.name)
            )
        if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_EVERY:
            self._last_housekeeping = time.monotonic()
            self._guard("housekeeping", self._housekeeping)
        return every

    def _beat(self) -> bool:
        """Renew this worker's row and the leases it holds; drop the claims taken over."""
        now = self.clock.now()
        with self._held_lock:
            held = list(self._held)
        Worker.objects.using(self.db).filter(pk=self.id).update(
            heartbeat_at=now, in_flight=len(held), stopping=self.stopping.is_set()
        )
        # Keep the claims this worker holds alive for two more heartbeats: a worker that
        # dies or freezes stops renewing them, and the rescue sweep takes them over.
        lease = now + 2 * self.options.heartbeat_interval + self.options.lease_grace
        renewed: dict[uuid.UUID, int] = {}
        for start in range(0, len(held), 1000):
            renewed.update(
                extend(
                    db=self.db, worker_id=self.id, ids=held[start : start + 1000], lease_until=lease
                )
            )
        lost = []
        with self._held_lock:
            for alarm_id in held:
                claim = self._held.get(alarm_id)
                if claim is None:
                    continue  # recorded meanwhile
                if renewed.get(alarm_id) == claim.attempt:
                    self._leases[alarm_id] = max(self._leases.get(alarm_id, lease), lease)
                else:
                    # Taken over by another worker's rescue: drop it from the queue (it is
                    # never started) and from the leases this worker renews.
                    lost.append(claim)
                    del self._held[alarm_id]
                    self._leases.pop(alarm_id, None)
        if lost:
            logger.warning(
                "%d claim(s) are no longer held by this worker (their leases expired and another "
                "worker took them over): dropped; those not started yet will not start: %s",
                len(lost),
                ", ".join(f"{c.alarm_id} attempt {c.attempt}" for c in lost[:10]),
            )
        return True

    def _housekeeping(self) -> None:
        now = self.clock.now()
        alive_since = now - 3 * self.options.heartbeat_interval
        Worker.objects.using(self.db).dead(
            now - max(DEAD_WORKER_AFTER, 10 * self.options.heartbeat_interval)
        ).delete()
        # One worker at a time purges: the live worker with the smallest id.
        first = (
            Worker.objects.using(self.db)
            .alive(alive_since)
            .order_by("id")
            .values_list("id", flat=True)
            .first()
        )
        if first != self.id:
            return
        # Up to 20 small batches a minute (10,000 rows of each kind), stopping early when
        # there is nothing left: short transactions, and a busy system still keeps up.
        for _ in range(20):
            if self.stopping.is_set() or max(purge(db=self.db, now=now)) < PURGE_BATCH:
                break

    # -- helpers ----------------------------------------------------------------------------------

    def _guard(self, what: str, action: Callable[[], T]) -> T | None:
        """Run one step of a side thread: an error is logged and the thread goes on (a side
        thread that ended would leave the worker claiming without heartbeats or rescue)."""
        return self.supervisor.step(what, action)

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        delay = 0.5
        while True:
            try:
                return action()
            except DatabaseError as exc:
                if self.stopping.is_set():
                    raise
                logger.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                _close(self.db)
                self.stopping.wait(delay)
                delay = min(delay * 2, 30.0)


def purge(*, db: str, now: datetime, batch: int = PURGE_BATCH) -> tuple[int, int]:
    """Delete succeeded alarms older than KEEP_SUCCEEDED and attempts older than KEEP_ATTEMPTS,
    a small batch at a time so that no long lock is taken."""
    old_alarms = list(
        Alarm.objects.using(db)
        .filter(state=State.SUCCEEDED, finished_at__lt=now - alarm_settings.KEEP_SUCCEEDED)
        .values_list("pk", flat=True)[:batch]
    )
    if old_alarms:
        Attempt.objects.using(db).filter(alarm_id__in=old_alarms).delete()
        Alarm.objects.using(db).filter(pk__in=old_alarms, state=State.SUCCEEDED).delete()
    old_attempts = list(
        Attempt.objects.using(db)
        .filter(started_at__lt=now - alarm_settings.KEEP_ATTEMPTS)
        .values_list("pk", flat=True)[:batch]
    )
    if old_attempts:
        Attempt.objects.using(db).filter(pk__in=old_attempts).delete()
    if old_alarms or old_attempts:
        logger.info(
            "purged %d succeeded alarm(s) and %d old attempt(s)", len(old_alarms), len(old_attempts)
        )
    return len(old_alarms), len(old_attempts)


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


def _data_version(db: str) -> int:
    """SQLite's PRAGMA data_version: it changes when another connection commits."""
    with connections[db].cursor() as cursor:
        cursor.execute("PRAGMA data_version")
        (version,) = cursor.fetchone()
    return int(version)


def _outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is away (the connection broke, the server restarts,
    SQLite is locked), as opposed to refusing one statement or value."""
    return isinstance(exc, (OperationalError, InterfaceError))


def _close(db: str) -> None:
    try:
        connections[db].close()
    except Exception:
        pass


def _psycopg3(db: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return getattr(connections[db], "Database", None) is psycopg


#: When one recorder batch holds more successes than this, they are logged as one INFO line
#: (and one DEBUG line each): a worker draining thousands a second writes a readable log.
LOG_SUCCESSES_EACH_UP_TO = 10


def _level(item: Completion) -> int:
    if item.state == State.FAILED or item.signal == "failed":
        return logging.ERROR
    if item.result.outcome != Outcome.OK:
        return logging.WARNING
    return logging.INFO


def _log_attempts(items: Sequence[Completion]) -> None:
    """One line per attempt; successes in a large batch are summed up in one line."""
    levels = [_level(item) for item in items]
    successes = [item for item, level in zip(items, levels, strict=True) if level == logging.INFO]
    summarise = len(successes) > LOG_SUCCESSES_EACH_UP_TO
    for item, level in zip(items, levels, strict=True):
        _log_attempt(item, logging.DEBUG if summarise and level == logging.INFO else level)
    if summarise and logger.isEnabledFor(logging.INFO):
        late = sorted(
            (item.result.started_at - item.claim.intended_at).total_seconds() * 1000
            for item in successes
        )
        handlers = Counter(item.claim.handler for item in successes)
        logger.info(
            "%d attempts succeeded (%s); lateness p50 %.1f ms, max %.1f ms",
            len(successes),
            ", ".join(f"{name} x{count}" for name, count in handlers.most_common()),
            late[len(late) // 2],
            late[-1],
            extra={"succeeded": len(successes)},
        )


def _log_attempt(item: Completion, level: int) -> None:
    if not logger.isEnabledFor(level):
        return
    claim, result = item.claim, item.result
    late = (result.started_at - claim.intended_at).total_seconds() * 1000
    logger.log(
        level,
        "alarm %s %s attempt %d/%d: %s in %.1f ms (%.1f ms late)%s -> %s",
        claim.alarm_id,
        claim.handler,
        claim.budget_attempt,
        claim.max_attempts,
        result.outcome,
        (result.finished_at - result.started_at).total_seconds() * 1000,
        late,
        f": {result.error}" if result.error else "",
        item.state if item.due_at is None else f"{item.state} at {item.due_at.isoformat()}",
        extra={
            "alarm_id": str(claim.alarm_id),
            "handler": claim.handler,
            "attempt": claim.attempt,
            "outcome": result.outcome,
            "lateness_ms": late,
        },
    )


__all__ = ["Options", "Runner", "purge", "timeout_for"]
