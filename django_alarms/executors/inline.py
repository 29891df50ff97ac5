"""The inline executor: a pool of threads in the worker process, with per-attempt timeouts.

Python cannot stop a thread. When an attempt runs past its timeout the executor records the
attempt as ``timeout`` (the alarm is retried by its policy), marks the thread *abandoned* and
starts a replacement, so the pool keeps ``concurrency`` usable threads. The abandoned thread
finishes the handler in the background; whatever it returns is ignored and the thread exits.
At most ``concurrency`` threads may be abandoned at once; past that no replacement is started
(and a warning says so) until one of them returns, so a handler that hangs for ever cannot
make the worker spawn threads without end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import close_old_connections
from django.db.backends.signals import connection_created

from django_alarms.claims import Claim
from django_alarms.delivery import execute, timeout_for
from django_alarms.executors import ResultCallback, wait_while
from django_alarms.outcomes import Result, timed_out
from django_alarms.supervision import Supervisor
from django_alarms.types import Outcome

logger = logging.getLogger(__name__)


#: Per thread: whether a database connection was ever opened in it. A handler thread whose
#: handlers never touch the database has no connection to check after each attempt:
#: ``close_old_connections()`` in a thread without one cost 6.2 us a call (timeit, 100,000
#: calls, Django 5.2, on the 2-core machine of docs/performance.md), against 50-60 us of
#: worker CPU for a whole delivery in the herd.
_opened = threading.local()


def _note_connection(**kwargs: object) -> None:
    _opened.any = True


connection_created.connect(_note_connection, dispatch_uid="django_alarms.inline.opened")


@dataclass(slots=True, eq=False)
class _Slot:
    claim: Claim
    started_at: datetime
    deadline: float
    limit: float
    abandoned: bool = False
    thread: threading.Thread = field(default_factory=threading.current_thread)


class InlineExecutor:
    name = "inline"
    #: The worker hands an attempt over this long before its due time; the handler thread
    #: waits out the rest itself, so only its own wake-up stands between the due time and the
    #: call (not the worker's wake-up followed by a hand-over between threads).
    lead = 0.005

    def __init__(
        self,
        *,
        concurrency: int,
        on_result: ResultCallback,
        now: Callable[[], datetime],
        may_start: Callable[[Claim], bool] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.supervisor = supervisor or Supervisor()
        self.may_start = may_start
        self.on_result = on_result
        self.now = now
        self._queue: queue.SimpleQueue[tuple[Claim, float | None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._idle_waiters = 0  # threads in wait_idle(): only they need a notification
        self._slots: dict[int, _Slot] = {}
        self._queued = 0
        self._threads: list[threading.Thread] = []
        self._abandoned = 0
        self._unreplaced = 0  # abandoned threads whose replacement has not started yet
        self._stopping = False
        self._monitor_wake = threading.Event()
        self._monitor_next = 0.0  # time.monotonic() at which the monitor looks next
        self._monitor: threading.Thread | None = None
        self._counter = 0

    # -- pool -------------------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()
        self._monitor = self.supervisor.thread(
            "alarms-timeouts", self._watch, done=lambda: self._stopping, wait=time.sleep
        )
        self._monitor.start()

    def _spawn(self) -> threading.Thread:
        self._counter += 1
        thread = self.supervisor.thread(
            f"alarms-handler-{self._counter}",
            self._work,
            done=lambda: self._stopping,
            wait=time.sleep,
        )
        thread.start()
        self._threads.append(thread)
        return thread

    def _work(self) -> None:
        me = threading.get_ident()
        while True:
            item = self._queue.get()
            if item is None:
                return
            if not self._attempt(me, *item):
                return  # abandoned: a replacement thread took this one's place

    def _attempt(self, me: int, claim: Claim, at: float | None) -> bool:
        """Run one submitted attempt in this thread. False: it ran past its timeout, so the
        thread was abandoned and must end."""
        if at is not None:
            early = at - time.monotonic()
            if early > 0:
                time.sleep(early)  # at most `lead`: the attempt is due in a moment
        try:
            if self.may_start is not None and not self.may_start(claim):
                self._dequeued()
                return True
            limit = timeout_for(claim)
            slot = _Slot(
                claim=claim,
                started_at=self.now(),
                deadline=time.monotonic() + limit,
                limit=limit,
            )
        except Exception as exc:
            # The attempt could not start: it is reported as failed, never left held.
            self._dequeued()
            self.supervisor.failed("starting an attempt", exc, alarm_id=claim.alarm_id)
            now = self.now()
            error = f"WorkerError: the attempt could not start ({type(exc).__name__}: {exc})"
            self.on_result(claim, Result(Outcome.ERROR, now, now, error=error))
            return True
        with self._lock:
            self._queued -= 1
            self._slots[me] = slot
        if slot.deadline < self._monitor_next:
            self._monitor_wake.set()  # it falls due before the monitor looks again
        try:
            result = execute(claim, now=self.now, started=slot.started_at)
        except BaseException as exc:  # execute() only lets non-Exception errors through
            logger.exception("handler %s raised %r", claim.handler, exc)
            result = Result(Outcome.ERROR, slot.started_at, self.now(), repr(exc))
        finally:
            # Each attempt is like a request: a connection that the handler left broken
            # or that outlived CONN_MAX_AGE is closed, so the next attempt gets a good one.
            if getattr(_opened, "any", False):
                self.supervisor.step("closing old connections", close_old_connections)
        with self._lock:
            if slot.abandoned:
                self._abandoned -= 1
                logger.info(
                    "abandoned attempt of alarm %s finished after its timeout; result ignored",
                    claim.alarm_id,
                )
                return False
            del self._slots[me]
            if self._idle_waiters and not self._slots:
                self._idle.notify_all()
        self.on_result(claim, result)
        return True

    def _dequeued(self) -> None:
        """A submitted claim leaves the queue without starting."""
        with self._lock:
            self._queued -= 1
            if self._idle_waiters and not self._slots and not self._queued:
                self._idle.notify_all()

    def _watch(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            expired: list[_Slot] = []
            next_deadline = now + 1.0
            # While scanning, every new attempt wakes the monitor (it may have been missed).
            self._monitor_next = float("inf")
            with self._lock:
                for ident, slot in list(self._slots.items()):
                    if slot.deadline <= now:
                        slot.abandoned = True
                        self._abandoned += 1
                        del self._slots[ident]
                        expired.append(slot)
                    else:
                        next_deadline = min(next_deadline, slot.deadline)
                if expired and self._idle_waiters and not self._slots:
                    self._idle.notify_all()
            for slot in expired:
                logger.warning(
                    "alarm %s attempt %d ran past its %g s timeout; recording it as timeout",
                    slot.claim.alarm_id,
                    slot.claim.number,
                    slot.limit,
                    extra={"alarm_id": str(slot.claim.alarm_id), "handler": slot.claim.handler},
                )
                self.on_result(
                    slot.claim, timed_out(slot.claim, slot.started_at, self.now(), slot.limit)
                )
                with self._lock:
                    replace = self._abandoned <= self.concurrency
                if replace:
                    self._unreplaced += 1
                else:
                    logger.warning(
                        "%d handler threads are stuck past their timeout; not starting more "
                        "until one returns",
                        self._abandoned,
                    )
            # A thread that could not be started (the system refused one) is tried again
            # at the next look, within a second: the pool keeps its size.
            while self._unreplaced:
                if self.supervisor.step("starting a handler thread", self._spawn) is None:
                    break
                self._unreplaced -= 1
            self._monitor_next = next_deadline
            self._monitor_wake.wait(max(0.0, next_deadline - time.monotonic()))
            self._monitor_wake.clear()

    # -- Executor protocol ---------------------------------------------------------------------

    def submit(self, claim: Claim, at: float | None = None) -> None:
        with self._lock:
            self._queued += 1
        self._queue.put((claim, at))

    def held(self) -> int:
        with self._lock:
            return self._queued + len(self._slots)

    def running(self) -> list[Claim]:
        with self._lock:
            return [slot.claim for slot in self._slots.values()]

    def take_unstarted(self) -> list[Claim]:
        taken: list[Claim] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                taken.append(item[0])
        with self._lock:
            self._queued -= len(taken)
        return taken

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            self._idle_waiters += 1
            try:
                return wait_while(self._idle, lambda: bool(self._slots or self._queued), timeout)
            finally:
                self._idle_waiters -= 1

    def stop(self) -> None:
        self._stopping = True
        self._monitor_wake.set()
        for _ in self._threads:
            self._queue.put(None)
