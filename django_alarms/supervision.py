"""Supervision of a worker's threads: a fault in one step is logged and retried, never the end
of the thread.

A worker is several threads (the main loop, the recorder, the heartbeat, the change feed's
listener, the executor's handler threads and timeout monitor). If one of them ended on an
unexpected exception the others would go on without it: a worker claiming alarms that nobody
records, or holding leases that nobody renews. So every thread's body runs under
:meth:`Supervisor.run`, and every step of a loop under :meth:`Supervisor.step`:

- an ``Exception`` is logged (a database error as one line, anything else with its traceback),
  the thread backs off and goes on; the failures are counted per thread;
- anything that is not an ``Exception`` (``SystemExit``, or another ``BaseException`` raised
  in the thread) means the worker cannot go on: ``on_fatal`` is called, which makes the worker
  stop, release what it holds and exit non-zero.

This module imports nothing of the package, so that the executors and the worker can share it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connections

logger = logging.getLogger("django_alarms.worker")
T = TypeVar("T")

#: The longest a thread waits before it runs a body again that failed unexpectedly.
MAX_BACKOFF = 30.0


class Supervisor:
    """Runs the steps and the bodies of a worker's threads.

    ``on_error`` is called after every failed step or body (the worker closes its database
    connection there, so that the next try opens a fresh one); ``on_fatal`` when a thread meets
    an error it cannot go on after.
    """

    def __init__(
        self,
        *,
        on_error: Callable[[], None] = lambda: None,
        on_fatal: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.on_error = on_error
        self.on_fatal = on_fatal
        #: Failed steps and bodies, by what failed (for tests and the worker's health).
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()

    def step(self, what: str, action: Callable[[], T], *, alarm_id: object = None) -> T | None:
        """Run one step of a loop and return its value, or ``None`` when it failed (logged)."""
        try:
            return action()
        except Exception as exc:
            self.failed(what, exc, alarm_id)
            return None

    def run(
        self,
        what: str,
        body: Callable[[], None],
        *,
        done: Callable[[], bool],
        wait: Callable[[float], object],
    ) -> None:
        """Run a thread's ``body`` until it returns or ``done()``: when it raises an
        ``Exception`` it is run again after a back-off (``wait(seconds)``, which may return
        early when the worker stops); any other exception is fatal to the worker."""
        delay = 0.5
        while True:
            began = time.monotonic()
            try:
                body()
                return
            except Exception as exc:
                self.failed(what, exc, None)
                if done():
                    return
                if time.monotonic() - began > 2 * MAX_BACKOFF:
                    delay = 0.5  # it had been running well: a new fault, not the same one
                logger.error("%s: running it again in %.1f s", what, delay)
                wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                logger.critical(
                    "%s ended on %s; this worker cannot go on and stops",
                    what,
                    type(exc).__name__,
                    exc_info=True,
                )
                if self.on_fatal is not None:
                    self.on_fatal(what, exc)
                return

    def thread(
        self,
        name: str,
        body: Callable[[], None],
        *,
        done: Callable[[], bool],
        wait: Callable[[float], object],
        daemon: bool = True,
    ) -> threading.Thread:
        """A thread (not started) that runs ``body`` under :meth:`run`."""
        return threading.Thread(
            target=self.run,
            args=(name, body),
            kwargs={"done": done, "wait": wait},
            name=name,
            daemon=daemon,
        )

    def failed(self, what: str, exc: Exception, alarm_id: object = None) -> None:
        """Count and log a failure of ``what`` (for loops that handle their own retries)."""
        with self._lock:
            self.failures[what] += 1
        about = f" (alarm {alarm_id})" if alarm_id is not None else ""
        if isinstance(exc, DatabaseError):
            logger.warning("%s failed%s: %s", what, about, exc)
        else:
            logger.exception("%s failed unexpectedly%s; going on", what, about)
        try:
            self.on_error()
        except Exception:
            logger.exception("cleaning up after %s failed", what)


def outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is away (the connection broke, the server restarts,
    SQLite is locked), as opposed to refusing one statement or value."""
    return isinstance(exc, (OperationalError, InterfaceError))


def close(db: str) -> None:
    """Close this thread's connection to ``db`` after a failure, so that the next try opens
    a fresh one (never raises: the connection may be broken already)."""
    try:
        connections[db].close()
    except Exception:
        pass
