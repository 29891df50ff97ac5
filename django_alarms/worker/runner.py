"""The worker: load, arm, claim shortly before the due time, fire on time, record, recover.

This module holds the worker's lifecycle and its main loop; each side thread has a module of
its own. The threads of one worker process and what passes between them::

    main loop (Runner._loop)  --claims at their due time-->  executor (handler threads)
      | loads the window, follows the change feed,              |  attempt ended
      | claims (worker/claimer.py) into Holdings, dispatches    v
      ^                                                     Recorder (worker/recorder.py)
      |  re-arms retries and next occurrences  <-------------  writes batches, forgets
      |                                                         what it wrote (Holdings)
    Listener (worker/loader.py, PostgreSQL): NOTIFY wakes the main loop
    Heartbeat (worker/heartbeat.py): renews the row and the leases in Holdings, drops what
      another worker took over, rescues expired leases, housekeeping and purge
    executor's timeout monitor (executors/inline.py): reports attempts past their timeout

- the *main* thread (:meth:`Runner.run`): loads the window, follows the change feed, claims
  what is about to fall due and hands each claim to the executor at its due time, waking
  exactly when the next thing must happen (no busy polling);
- the executor's threads run handlers (:mod:`django_alarms.executors.inline`), each asking
  :meth:`Holdings.may_start` right before it starts an attempt;
- the *recorder* writes finished attempts in batches (one transaction per batch);
- the *heartbeat* renews this worker's row and the leases of what it holds, runs the rescue
  sweep for expired leases (every worker does: there is no leader) and the housekeeping;
- on PostgreSQL the *listener* waits for NOTIFY and wakes the main thread.

Every thread runs under the worker's :class:`~django_alarms.supervision.Supervisor`. Each uses
its own database connection (Django's are per thread). No transaction is held open while a
handler runs: claims and completions are short transactions of their own.
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from django.db import DatabaseError, close_old_connections, connections

from django_alarms.claims import Claim
from django_alarms.conf import EXECUTORS, alarm_settings, user_settings
from django_alarms.engines import get_engine
from django_alarms.executors import get_executor
from django_alarms.handlers import registry
from django_alarms.logs import WorkerContext
from django_alarms.metrics import Gauges, worker_metrics
from django_alarms.outcomes import Completion, Result
from django_alarms.supervision import MAX_BACKOFF, Supervisor, close
from django_alarms.worker.claimer import CLAIM_AHEAD, Claimer, Ready
from django_alarms.worker.clock import DbClock
from django_alarms.worker.heartbeat import Heartbeat, Serving
from django_alarms.worker.holdings import Holdings
from django_alarms.worker.loader import Listener, Loader
from django_alarms.worker.recorder import RECORD_LINGER, Recorder
from django_alarms.worker.timers import Timers
from django_alarms.worker.window import Window

logger = logging.getLogger("django_alarms.worker")
T = TypeVar("T")

#: How often a worker on SQLite asks whether another connection committed (PRAGMA
#: data_version, which reads no table), to find new alarms sooner than POLL_INTERVAL.
SQLITE_WATCH_INTERVAL = 0.1
#: Seconds a stopping worker lets the attempts in flight finish (``--shutdown-timeout``).
SHUTDOWN_TIMEOUT = 30.0


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
    shutdown_timeout: float = SHUTDOWN_TIMEOUT
    once: bool = False
    #: The queues served (None: all), as ``run_alarms --queues`` names them.
    queues: tuple[str, ...] | None = None
    #: Count Prometheus metrics (``run_alarms --metrics-port`` serves them).
    metrics: bool = False

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
        if overrides.get("concurrency") is None and "CONCURRENCY" not in user_settings():
            # Set by neither the option nor the setting: the executor's own default (the
            # remote ones hand off more attempts at once than a worker runs threads).
            values["concurrency"] = (
                EXECUTORS[values["executor"]].concurrency or values["concurrency"]
            )
        return cls(**values)


class Runner:
    """One worker process. Drive it with :meth:`run`; stop it with :meth:`request_stop`."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.db = options.db
        self.id = uuid.uuid4()
        self.name = f"{socket.gethostname()}:{os.getpid()}:{self.id.hex[:6]}"
        self.engine = get_engine(self.db)
        self.clock = DbClock(self.db)
        self.loader = Loader(self.db, options.handlers, options.queues)
        self.timers = Timers()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self._ready: list[Ready] = []
        #: What this worker holds, from the claim until the attempt is recorded.
        self.holdings = Holdings(self.clock.now)
        self.metrics = worker_metrics(options.metrics)
        self._log_context = WorkerContext(self.name)
        self.window = Window(
            loader=self.loader,
            clock=self.clock,
            timers=self.timers,
            holdings=self.holdings,
            load_interval=options.load_interval,
            max_in_memory=options.max_in_memory,
            once=options.once,
        )
        self._changes_pending = threading.Event()
        self.pace = Pace()  # completions per second: sizes the claims
        self._listener: Listener | None = None
        #: 0, or 1 when the worker stopped because it could not go on (a thread met an error
        #: that is not an ``Exception``, or attempts could not be recorded at shutdown).
        self.exit_code = 0
        self.supervisor = Supervisor(on_error=lambda: close(self.db), on_fatal=self._fatal)
        self.executor = get_executor(
            options.executor,
            concurrency=options.concurrency,
            on_result=self._on_result,
            now=self.clock.now,
            db=self.db,
            may_start=self.holdings.may_start,
            supervisor=self.supervisor,
        )
        self.recorder = Recorder(
            db=self.db,
            now=self.clock.now,
            worker=self.name,
            supervisor=self.supervisor,
            written=self._recorded,
            writing=self.holdings.begin_recording,
            let_go=self.holdings.forget,
            more_soon=self._more_results_soon,
            metrics=self.metrics,
        )
        self.heartbeat = Heartbeat(
            db=self.db,
            worker_id=self.id,
            name=self.name,
            holdings=self.holdings,
            now=self.clock.now,
            interval=options.heartbeat_interval,
            lease_grace=options.lease_grace,
            supervisor=self.supervisor,
            stopping=self.stopping,
            stopped=self.stopped,
            serves=Serving(
                options.executor,
                options.concurrency,
                options.handlers or (),
                options.queues or (),
            ),
            metrics=self.metrics,
        )
        # Not a daemon: what the recorder holds is written before the process ends.
        self._recorder = self.supervisor.thread(
            "alarms-recorder",
            self.recorder.run,
            done=self.recorder.done,
            wait=time.sleep,
            daemon=False,
        )
        self._heartbeat = self.supervisor.thread(
            "alarms-heartbeat", self.heartbeat.run, done=self.stopped.is_set, wait=self.stopped.wait
        )
        self.claimer = Claimer(
            db=self.db,
            worker_id=self.id,
            clock=self.clock,
            timers=self.timers,
            holdings=self.holdings,
            ready=self._ready,
            rearm=self.window.rearms,
            concurrency=options.concurrency,
            # An executor whose messages wait in a queue (Celery) covers that wait too.
            lease_grace=options.lease_grace
            + timedelta(seconds=getattr(self.executor, "queue_wait", 0.0)),
            once=options.once,
            stopping=self.stopping,
            rate=lambda: self.pace.rate,
            window_end=lambda: self.window.end,
            queues=options.queues,
            metrics=self.metrics,
        )

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
        self._log_context.install()
        self.recorder.started_at = self.clock.now()
        _retrying("start", self.heartbeat.register, db=self.db, stopping=self.stopping)
        _retrying("clock", self.clock.sync, db=self.db, stopping=self.stopping)
        self.executor.start()
        self._recorder.start()
        self._heartbeat.start()
        if self.engine.notifies and not self.options.once:
            if _psycopg3(self.db):
                self._listener = Listener(self.db, self._on_notify, self.supervisor)
                self._listener.start()
            else:
                logger.warning("LISTEN/NOTIFY needs psycopg 3; polling every POLL_INTERVAL")
        self.metrics.watch(self.gauges)
        _log_started(self)

    def gauges(self) -> Gauges:
        """What this worker holds now (its metrics' gauges)."""
        end = self.window.end
        return Gauges(
            armed=len(self.timers),
            in_flight=len(self.holdings),
            window_ahead_seconds=(
                max(0.0, (end - self.clock.now()).total_seconds()) if end is not None else 0.0
            ),
        )

    def _shutdown(self) -> None:
        self.metrics.unwatch(self.gauges)
        self.stopping.set()
        if self._listener is not None:
            self._listener.stop()
        # Claimed but never started: give them back, as they were.
        unstarted = [item[2] for item in self._ready] + self.executor.take_unstarted()
        self._ready.clear()
        if unstarted:
            released = self.supervisor.step("release", lambda: self.claimer.give_back(unstarted))
            released = released or 0
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
            self.supervisor.step(
                "expire", lambda: self.engine.expire(claims=running, now=self.clock.now())
            )
        self.executor.stop()
        self.recorder.finish()
        self._recorder.join(timeout=self.options.shutdown_timeout + 10)
        if self.recorder.gave_up:
            self.exit_code = 1
        self.stopped.set()
        self.supervisor.step("unregister", self.heartbeat.unregister)
        close_old_connections()
        logger.info(
            "worker %s stopped: %d claimed, %d recorded, %d fenced off",
            self.name,
            self.claimer.claimed,
            self.recorder.recorded,
            self.recorder.fenced,
        )
        self._log_context.uninstall()

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
        watching = not opts.once and self.engine.watches_commits
        next_watch = 0.0 if watching else float("inf")
        data_version: int | None = None
        failures = 0
        while not self.stopping.is_set():
            self.wake.clear()
            now = time.monotonic()
            try:
                if watching and now >= next_watch:
                    current = self.engine.commits_seen()
                    if data_version is not None and current != data_version:
                        self._changes_pending.set()
                    data_version = current
                    next_watch = now + SQLITE_WATCH_INTERVAL
                if now >= next_load:
                    self._load()
                    next_load = now + (min(load_every, 1.0) if self.window.capped else load_every)
                    next_poll = now + poll_every
                elif not opts.once and (self._changes_pending.is_set() or now >= next_poll):
                    self._changes_pending.clear()
                    self._poll()
                    next_poll = now + poll_every
                self.window.take_rearms()
                self.claimer.claim_due()
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
            if self.claimer.crowds and self.claimer.capacity() > 0:
                deadlines.append(now)  # a crowd is still being swept
            if upcoming is not None and self.claimer.capacity() > 0:
                deadlines.append(upcoming - ahead)
            elif opts.once:
                deadlines.append(now + 0.05)
            timeout = min(deadlines) - time.monotonic()
            if timeout > 0:
                self.wake.wait(timeout)

    def _done(self) -> bool:
        return (
            not len(self.holdings)
            and not len(self.timers)
            and not self._ready
            and not self.claimer.crowds
            and self.window.rearms.empty()
        )

    # -- loading (worker/window.py) ----------------------------------------------------------------

    def _load(self) -> None:
        self.window.load()

    def _poll(self) -> None:
        self.window.poll()

    @property
    def stats(self) -> dict[str, int]:
        return {"loads": self.window.loads}

    def _on_notify(self) -> None:
        self._changes_pending.set()
        self.wake.set()

    # -- firing ----------------------------------------------------------------------------------

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
            self.recorder.recorded += 1
            self.holdings.forget([claim.alarm_id])
            self.pace.count(1)
            self.wake.set()
            return
        self.recorder.put(claim, result)

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

    def _recorded(self, completions: Sequence[Completion], applied: Sequence[Completion]) -> None:
        """After the recorder wrote a batch: stop holding its claims, and arm again what this
        worker's window holds of the retries and next occurrences it wrote."""
        self.holdings.forget([c.claim.alarm_id for c in completions])
        self.pace.count(len(completions))
        self.window.rearm_written(applied)
        self.wake.set()


def _log_started(runner: Runner) -> None:
    """The line that says how the worker runs."""
    options = runner.options
    logger.info(
        "worker %s started: executor=%s concurrency=%d load_interval=%gs poll_interval=%gs "
        "max_in_memory=%d heartbeat=%gs lease_grace=%gs handlers=%s queues=%s database=%s "
        "(%s)%s",
        runner.name,
        runner.executor.name,
        options.concurrency,
        options.load_interval.total_seconds(),
        options.poll_interval.total_seconds(),
        options.max_in_memory,
        options.heartbeat_interval.total_seconds(),
        options.lease_grace.total_seconds(),
        ",".join(options.handlers) if options.handlers else f"all registered ({len(registry)})",
        ",".join(options.queues) if options.queues else "all",
        runner.db,
        runner.engine.connection.vendor,
        " once" if options.once else "",
    )


def _retrying(what: str, action: Callable[[], T], *, db: str, stopping: threading.Event) -> T:
    """``action()``, tried again after a back-off while the database fails (at start-up)."""
    delay = 0.5
    while True:
        try:
            return action()
        except DatabaseError as exc:
            if stopping.is_set():
                raise
            logger.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            close(db)
            stopping.wait(delay)
            delay = min(delay * 2, 30.0)


class Pace:
    """Completions per second, smoothed (0.2 s steps): how much a worker claims at once."""

    def __init__(self) -> None:
        self.rate = 0.0
        self._completed = 0
        self._mark = (time.monotonic(), 0)

    def count(self, n: int) -> None:
        self._completed += n
        mark, count = self._mark
        now = time.monotonic()
        if now - mark >= 0.2:
            current = (self._completed - count) / (now - mark)
            self.rate = current if self.rate == 0 else 0.5 * self.rate + 0.5 * current
            self._mark = (now, self._completed)


def _psycopg3(db: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return getattr(connections[db], "Database", None) is psycopg


__all__ = ["Options", "Runner"]
