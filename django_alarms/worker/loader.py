"""What a worker knows of the alarms table: windowed loads, the change feed, LISTEN/NOTIFY."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connections

from django_alarms.engines import Served, WindowKey, get_engine
from django_alarms.supervision import Supervisor

logger = logging.getLogger(__name__)


class Loader:
    """The two reads a worker makes to arm alarms, both served by an index; rows are dicts of
    :data:`engines.ARM_FIELDS` (each database's engine reads them its fastest way)."""

    def __init__(
        self, db: str, handlers: Sequence[str] | None, queues: Sequence[str] | None = None
    ) -> None:
        self.db = db
        #: What the worker serves: the alarms of ``handlers`` in ``queues`` (empty: any).
        self.served = Served(list(handlers) if handlers else None, list(queues) if queues else None)
        self.engine = get_engine(db)

    def window(
        self, until: datetime, limit: int, after: WindowKey | None = None
    ) -> list[dict[str, Any]]:
        """Scheduled alarms due before ``until`` (overdue ones included), earliest first and
        ties by id; with ``after``, those after that ``(due_at, id)``."""
        return self.engine.window(until=until, limit=limit, served=self.served, after=after)

    def changes(self, since: datetime, until: datetime, limit: int) -> list[dict[str, Any]]:
        """Scheduled alarms changed after ``since`` and due by ``until``."""
        return self.engine.changes(since=since, until=until, limit=limit, served=self.served)


def _connection_error(exc: BaseException) -> bool:
    """A database error (Django's or the driver's own, which the listener's raw connection
    raises): the connection is lost, not a fault of the worker's code."""
    if isinstance(exc, DatabaseError):
        return True
    try:
        import psycopg
    except ImportError:  # the listener runs on psycopg 3 only
        return False
    return isinstance(exc, psycopg.Error)


class Listener(threading.Thread):
    """PostgreSQL only: LISTEN on a connection of its own and call ``on_notify`` for every
    wake-up. Notifications only wake the worker; the rows are the truth."""

    def __init__(
        self, db: str, on_notify: Callable[[], None], supervisor: Supervisor | None = None
    ) -> None:
        super().__init__(name="alarms-listener", daemon=True)
        self.db = db
        self.on_notify = on_notify
        self.supervisor = supervisor or Supervisor()
        self.stopped = threading.Event()
        self.connected = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        delay = 0.5
        while not self.stopped.is_set():
            wrapper = connections.create_connection(self.db)
            try:
                wrapper.ensure_connection()
                raw = wrapper.connection
                raw.autocommit = True
                raw.execute(get_engine(self.db).listen_statement)
                self.connected.set()
                delay = 0.5
                # Something may have changed while we were not listening.
                self.on_notify()
                while not self.stopped.is_set():
                    for _ in raw.notifies(timeout=1.0):
                        self.on_notify()
            except Exception as exc:
                self.connected.clear()
                if self.stopped.is_set():
                    break
                if not _connection_error(exc):
                    self.supervisor.failed("the change feed's listener", exc)
                logger.warning(
                    "LISTEN connection lost; reconnecting in %.1f s (polling every "
                    "POLL_INTERVAL meanwhile)",
                    delay,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                try:
                    wrapper.close()
                except Exception:
                    pass
