"""SQLite: the claim in one statement, the loads read as text, commits watched cheaply.

- SQLite 3.35+ has ``UPDATE ... RETURNING``: the claim is one statement under SQLite's write
  lock, like PostgreSQL's (older versions take the ORM path of the base engine);
- the window and the change feed read the due time as the text Django stored and parse it
  with ``datetime.fromisoformat``: the ORM's converters cost twice as much, and the change
  feed runs after every commit;
- there is no NOTIFY, but ``PRAGMA data_version`` says whether another connection committed
  without reading a table;
- SQLite runs in this process: its clock is this machine's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from django.db import transaction

from django_alarms.claims import CLAIM_FIELDS, Claim, decoded
from django_alarms.engines.base import Engine, HandWrittenLoads, Narrowing, Served, arm_rows
from django_alarms.models import Alarm
from django_alarms.types import State

_TABLE = f'"{Alarm._meta.db_table}"'


def _time(value: datetime | str) -> datetime:
    # Django stores aware datetimes on SQLite as UTC without an offset; its connection hands
    # them back as naive datetimes (declared types are converted) or, in some cases, as text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


class SQLiteEngine(HandWrittenLoads, Engine):
    clock_query = None
    watches_commits = True

    def _claim(
        self,
        worker_id: uuid.UUID,
        now: datetime,
        lease_until: datetime,
        narrowing: Narrowing,
        limit: int,
    ) -> list[Claim]:
        connection = self.connection
        if not connection.features.can_return_rows_from_bulk_insert:  # before SQLite 3.35
            return super()._claim(worker_id, now, lease_until, narrowing, limit)
        moment = connection.ops.adapt_datetimefield_value
        conditions = ["state = %s", "due_at <= %s"]
        params: list[Any] = [State.SCHEDULED.value, moment(now)]
        if narrowing.ids is not None:
            conditions.append(f"id IN ({_marks(narrowing.ids)})")
            params.extend(alarm_id.hex for alarm_id in narrowing.ids)
        for column, values in narrowing.served.columns():
            conditions.append(f"{column} IN ({_marks(values)})")
            params.extend(values)
        if narrowing.handler_timeout_only:
            conditions.append("timeout IS NULL")
        # One statement under SQLite's write lock: the rows it changes are ours.
        sql = (
            f"UPDATE {_TABLE} SET state = %s, attempts = attempts + 1, claimed_by = %s, "
            "claimed_at = %s, lease_until = %s, updated_at = %s "
            f"WHERE id IN (SELECT id FROM {_TABLE} WHERE {' AND '.join(conditions)} "
            "ORDER BY due_at LIMIT %s) "
            f"RETURNING {', '.join(CLAIM_FIELDS)}"
        )
        claimed = [State.RUNNING.value, worker_id.hex, moment(now), moment(lease_until)]
        with transaction.atomic(using=self.db), connection.cursor() as cursor:
            cursor.execute(sql, [*claimed, moment(now), *params, limit])
            raw = cursor.fetchall()
        return decoded(raw, worker_id, lease_until, _time)

    def _arm(
        self, condition: str, values: list[Any], limit: int, served: Served
    ) -> list[dict[str, Any]]:
        # ``due_at || ''`` has no declared type, so no converter parses it on the way.
        connection = self.connection
        moment = connection.ops.adapt_datetimefield_value
        sql = (
            "SELECT id, due_at || '', handler, timeout "
            f"FROM {_TABLE} WHERE state = %s AND {condition}"
        )
        params: list[Any] = [State.SCHEDULED.value]
        for value in values:  # stored as Django stores them: ids as 32 hex digits
            params.append(value.hex if isinstance(value, uuid.UUID) else moment(value))
        for column, chosen in served.columns():
            sql += f" AND {column} IN ({_marks(chosen)})"
            params.extend(chosen)
        sql += " ORDER BY due_at, id LIMIT %s"
        params.append(limit)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        as_uuid = uuid.UUID
        return arm_rows([(as_uuid(alarm_id), *rest) for alarm_id, *rest in rows], _time)

    def commits_seen(self) -> int:
        """SQLite's PRAGMA data_version: it changes when another connection commits."""
        with self.connection.cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            (version,) = cursor.fetchone()
        return int(version)
