"""What a worker knows of the alarms table: windowed loads, the change feed, LISTEN/NOTIFY."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db import DatabaseError, connections

from django_alarms.models import NOTIFY_CHANNEL, Alarm
from django_alarms.supervision import Supervisor
from django_alarms.types import State
from django_alarms.validation import EARLIEST

logger = logging.getLogger(__name__)

ARM_FIELDS = ("id", "due_at", "handler", "timeout")


class Loader:
    """The two reads a worker makes to arm alarms. Both are served by an index.

    Rows are dicts of :data:`ARM_FIELDS`. On PostgreSQL and SQLite the queries are written by
    hand (a worker may load tens of thousands of rows at once, and runs the change feed often):
    PostgreSQL reads the due time as microseconds since the epoch, since building a datetime
    from a number costs a fraction of parsing timestamp text; SQLite reads Django's own text.
    """

    def __init__(self, db: str, handlers: Sequence[str] | None) -> None:
        self.db = db
        self.handlers = list(handlers) if handlers else None

    def _scheduled(self) -> Any:
        qs = Alarm.objects.using(self.db).filter(state=State.SCHEDULED)
        if self.handlers is not None:
            qs = qs.filter(handler__in=self.handlers)
        return qs

    def window(self, until: datetime, limit: int) -> list[dict[str, Any]]:
        """Scheduled alarms due before ``until`` (overdue ones included), earliest first.
        Index: alarms_due (due_at where state is scheduled)."""
        vendor = connections[self.db].vendor
        if vendor == "postgresql":
            return self._postgresql("due_at < %s", [until], limit)
        if vendor == "sqlite":
            return self._sqlite("due_at < %s", [until], limit)
        return list(
            self._scheduled()
            .filter(due_at__lt=until)
            .order_by("due_at")
            .values(*ARM_FIELDS)[:limit]
        )

    def changes(self, since: datetime, until: datetime, limit: int) -> list[dict[str, Any]]:
        """Scheduled alarms changed after ``since`` and due before ``until``.
        Index: alarms_changed (updated_at where state is scheduled)."""
        vendor = connections[self.db].vendor
        if vendor == "postgresql":
            return self._postgresql("updated_at > %s AND due_at < %s", [since, until], limit)
        if vendor == "sqlite":
            return self._sqlite("updated_at > %s AND due_at < %s", [since, until], limit)
        return list(
            self._scheduled()
            .filter(updated_at__gt=since, due_at__lt=until)
            .order_by("due_at")
            .values(*ARM_FIELDS)[:limit]
        )

    def _postgresql(self, condition: str, params: list[Any], limit: int) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, (extract(epoch from due_at) * 1000000)::bigint, handler, timeout "
            f'FROM "{Alarm._meta.db_table}" WHERE state = %s AND {condition}'
        )
        params = [State.SCHEDULED, *params]
        if self.handlers is not None:
            sql += " AND handler = ANY(%s)"
            params.append(self.handlers)
        sql += " ORDER BY due_at LIMIT %s"
        params.append(limit)
        with connections[self.db].cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        epoch, micros = _EPOCH, timedelta
        try:
            return [
                {
                    "id": alarm_id,
                    "due_at": epoch + micros(microseconds=due),
                    "handler": handler,
                    "timeout": timeout,
                }
                for alarm_id, due, handler, timeout in rows
            ]
        except (OverflowError, TypeError, ValueError):
            return _one_by_one(rows, lambda due: epoch + micros(microseconds=due))

    def _sqlite(self, condition: str, params: list[Any], limit: int) -> list[dict[str, Any]]:
        # The change feed runs after every commit of another connection (and of the worker's
        # own), so it is written by hand here too: the due time is read as the text Django
        # stored (``due_at || ''`` has no declared type, so no converter parses it on the way)
        # and parsed by ``datetime.fromisoformat``; the ORM's converters cost twice as much.
        connection = connections[self.db]
        moment = connection.ops.adapt_datetimefield_value
        sql = (
            "SELECT id, due_at || '', handler, timeout "
            f'FROM "{Alarm._meta.db_table}" WHERE state = %s AND {condition}'
        )
        params = [State.SCHEDULED.value, *(moment(value) for value in params)]
        if self.handlers is not None:
            sql += f" AND handler IN ({', '.join(['%s'] * len(self.handlers))})"
            params.extend(self.handlers)
        sql += " ORDER BY due_at LIMIT %s"
        params.append(limit)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        parse, utc, as_uuid = datetime.fromisoformat, timezone.utc, uuid.UUID
        try:
            return [
                {
                    "id": as_uuid(alarm_id),
                    "due_at": parse(due).replace(tzinfo=utc),
                    "handler": handler,
                    "timeout": timeout,
                }
                for alarm_id, due, handler, timeout in rows
            ]
        except (OverflowError, TypeError, ValueError):
            rows = [(as_uuid(alarm_id), *rest) for alarm_id, *rest in rows]
            return _one_by_one(rows, lambda due: parse(due).replace(tzinfo=utc))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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


def _one_by_one(
    rows: Sequence[Sequence[Any]], moment: Callable[[Any], datetime]
) -> list[dict[str, Any]]:
    """The rows of a load, one at a time, when the fast path met a due time it cannot turn
    into a datetime (a row written around the API, out of range or not a time at all). Such
    an alarm is armed as due at the earliest storable instant, so it is claimed now and its
    attempt fails with an error naming its unreadable due time (the claim reads the row again
    and finds it so): one bad row never stops the worker's loads."""
    armed = []
    for alarm_id, due, handler, timeout in rows:
        try:
            at = moment(due)
        except (OverflowError, TypeError, ValueError):
            logger.warning(
                "alarm %s: its stored due time %r cannot be read; claiming it now so that its "
                "attempt fails with that error",
                alarm_id,
                due,
                extra={"alarm_id": str(alarm_id), "handler": handler},
            )
            at = EARLIEST
        armed.append({"id": alarm_id, "due_at": at, "handler": handler, "timeout": timeout})
    return armed


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
                raw.execute(f'LISTEN "{NOTIFY_CHANNEL}"')
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
