"""The physical limits, measured with the database driver alone (no Django in this module).

These functions run in the harness process or in child processes started with ``spawn``; they
take a :class:`Target` (where the database is) and row *templates* that the harness builds from
the models (so that the rows are exactly the ones Django would write, and a new column does not
break the baselines).

- :func:`fill`: insert rows as fast as the driver can (PostgreSQL ``COPY``, SQLite
  ``executemany`` in one transaction): the bulk-insert ceiling, and how the harness fills the
  table for the scale scenarios.
- :func:`drain`: the raw-SQL ceiling of a worker: claim 500 due rows in one statement
  (``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED LIMIT 500))
  RETURNING``: written ``id IN (SELECT ...)``, PostgreSQL plans a sequential scan of the whole
  table for every claim), then
  complete them in one transaction that also inserts their attempt rows, until none is left.
- :func:`commit_per_row`: one INSERT and one COMMIT per row.
- :func:`timer_floor`: how late a plain Python thread wakes up for a deadline on this machine.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

ALARM = "django_alarms_alarm"
ATTEMPT = "django_alarms_attempt"
CLAIM_BATCH = 500
#: The columns a claim reads back (as django_alarms.claims.CLAIM_FIELDS does).
CLAIM_COLUMNS = (
    "id, handler, key, name, payload, due_at, attempts, budget_start, max_attempts, timeout, "
    "created_at, recurrence, occurrence_at, last_error"
)


@dataclass(frozen=True)
class Target:
    vendor: str  # "postgresql" or "sqlite"
    dsn: str  # a libpq conninfo, or the SQLite file's path

    def connect(self) -> Any:
        if self.vendor == "postgresql":
            import psycopg

            return psycopg.connect(self.dsn, autocommit=True)
        conn = sqlite3.connect(self.dsn, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


#: A row template: ``[(column, value), ...]`` of a new alarm; ``id`` and ``due_at`` are replaced
#: per row.
Template = list[tuple[str, Any]]


def _sqlite_value(value: Any) -> Any:
    """Values as Django's SQLite backend stores them."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _pg_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        from psycopg.types.json import Jsonb

        return Jsonb(value)
    return value


def rows(template: Template, n: int, due: Any) -> tuple[list[str], list[list[Any]]]:
    """``n`` rows from ``template``, with fresh ids and ``due(i)`` as due time."""
    columns = [column for column, _ in template]
    base = [value for _, value in template]
    stamp = datetime.now(timezone.utc)
    for name in ("created_at", "updated_at"):  # written now, as the ORM would
        if name in columns:
            base[columns.index(name)] = stamp
    id_at = columns.index("id")
    due_at = columns.index("due_at")
    out = []
    for i in range(n):
        row = list(base)
        row[id_at] = uuid.uuid4()
        row[due_at] = due(i)
        out.append(row)
    return columns, out


def fill(target: Target, template: Template, n: int, due: Any, *, chunk: int = 50_000) -> float:
    """Insert ``n`` alarms; return the seconds spent (the rows are built before the clock
    starts, a chunk at a time, so only the database's work and the driver's are timed)."""
    conn = target.connect()
    spent = 0.0
    try:
        for start in range(0, n, chunk):
            columns, batch = rows(
                template, min(chunk, n - start), lambda i, first=start: due(first + i)
            )
            spent += _insert(conn, target.vendor, ALARM, columns, batch)
    finally:
        conn.close()
    return spent


def _insert(
    conn: Any, vendor: str, table: str, columns: list[str], batch: list[list[Any]]
) -> float:
    if vendor == "postgresql":
        values = [[_pg_value(v) for v in row] for row in batch]
        began = time.perf_counter()
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(sql) as copy:
            for row in values:
                copy.write_row(row)
        return time.perf_counter() - began
    values = [[_sqlite_value(v) for v in row] for row in batch]
    marks = ", ".join("?" * len(columns))
    began = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)
    conn.execute("COMMIT")
    return time.perf_counter() - began


def commit_per_row(target: Target, template: Template, n: int) -> float:
    """``n`` single-row INSERTs, each committed; return rows/s."""
    later = datetime.now(timezone.utc) + timedelta(days=30)
    columns, batch = rows(template, n, lambda i: later)
    conn = target.connect()
    try:
        if target.vendor == "postgresql":
            marks = ", ".join(["%s"] * len(columns))
            sql = f"INSERT INTO {ALARM} ({', '.join(columns)}) VALUES ({marks})"
            values = [[_pg_value(v) for v in row] for row in batch]
            began = time.perf_counter()
            for row in values:  # autocommit: one transaction per statement
                conn.execute(sql, row)
        else:
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {ALARM} ({', '.join(columns)}) VALUES ({marks})"
            values = [[_sqlite_value(v) for v in row] for row in batch]
            began = time.perf_counter()
            for row in values:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(sql, row)
                conn.execute("COMMIT")
        return n / (time.perf_counter() - began)
    finally:
        conn.close()


# -- the raw-SQL ceiling -------------------------------------------------------------------------


def drain(
    target: Target, attempt_template: Template, start: Any, results: Any, marked: Any = None
) -> None:
    """Claim and complete due alarms in batches of 500 until none is left (a child process).

    Puts ``(began, ended, rows, cpu_seconds)`` on ``results``; waits for ``start`` (an Event)
    first, so that the processes start together and their start-up is not timed. With
    ``marked`` (an Event), the connection stays open until it is set: the harness reads the
    server's CPU time while the server process is still there.
    """
    conn = target.connect()
    worker = uuid.uuid4()
    done = 0
    start.wait()
    cpu0 = time.process_time()
    began = time.time()
    try:
        if target.vendor == "postgresql":
            done = _drain_pg(conn, worker, attempt_template)
        else:
            done = _drain_sqlite(conn, worker, attempt_template)
    finally:
        ended = time.time()
        results.put((began, ended, done, time.process_time() - cpu0))
        if marked is not None:
            marked.wait(60)
        conn.close()


def _drain_pg(conn: Any, worker: uuid.UUID, template: Template) -> int:
    claim = (
        f"UPDATE {ALARM} SET state = 'running', attempts = attempts + 1, claimed_by = %s, "
        "claimed_at = now(), lease_until = now() + interval '5 minutes', updated_at = now() "
        f"WHERE id = ANY(ARRAY(SELECT id FROM {ALARM} WHERE state = 'scheduled' "
        f"AND due_at <= now() ORDER BY due_at LIMIT {CLAIM_BATCH} FOR UPDATE SKIP LOCKED)) "
        f"RETURNING {CLAIM_COLUMNS}"
    )
    complete = (
        f"UPDATE {ALARM} SET state = 'succeeded', finished_at = now(), claimed_by = NULL, "
        "claimed_at = NULL, lease_until = NULL, updated_at = now(), last_error = '' "
        "WHERE id = ANY(%s) AND state = 'running' AND claimed_by = %s AND attempts = 1"
    )
    columns = [column for column, _ in template]
    base = [_pg_value(value) for _, value in template]
    names = ("alarm_id", "due_at", "started_at", "finished_at")
    fields = {name: columns.index(name) for name in names}
    copy_sql = f"COPY {ATTEMPT} ({', '.join(columns)}) FROM STDIN"
    done = 0
    while True:
        claimed = conn.execute(claim, [worker]).fetchall()
        if not claimed:
            return done
        now = datetime.now(timezone.utc)
        ids = [row[0] for row in claimed]
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute(complete, [ids, worker])
            with cursor.copy(copy_sql) as copy:
                for row in claimed:
                    values = list(base)
                    values[fields["alarm_id"]] = row[0]
                    values[fields["due_at"]] = row[5]
                    values[fields["started_at"]] = now
                    values[fields["finished_at"]] = now
                    copy.write_row(values)
        done += len(claimed)


def _drain_sqlite(conn: Any, worker: uuid.UUID, template: Template) -> int:
    columns = [column for column, _ in template]
    base = [_sqlite_value(value) for _, value in template]
    at = {name: columns.index(name) for name in ("alarm_id", "due_at", "started_at", "finished_at")}
    insert = (
        f"INSERT INTO {ATTEMPT} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )
    done = 0
    me = worker.hex
    while True:
        now = _sqlite_value(datetime.now(timezone.utc))
        lease = _sqlite_value(datetime.now(timezone.utc) + timedelta(minutes=5))
        conn.execute("BEGIN IMMEDIATE")
        claimed = conn.execute(
            f"UPDATE {ALARM} SET state = 'running', attempts = attempts + 1, claimed_by = ?, "
            "claimed_at = ?, lease_until = ?, updated_at = ? "
            f"WHERE id IN (SELECT id FROM {ALARM} WHERE state = 'scheduled' AND due_at <= ? "
            f"ORDER BY due_at LIMIT {CLAIM_BATCH}) RETURNING {CLAIM_COLUMNS}",
            [me, now, lease, now, now],
        ).fetchall()
        conn.execute("COMMIT")
        if not claimed:
            return done
        now = _sqlite_value(datetime.now(timezone.utc))
        ids = [row[0] for row in claimed]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            f"UPDATE {ALARM} SET state = 'succeeded', finished_at = ?, claimed_by = NULL, "
            "claimed_at = NULL, lease_until = NULL, updated_at = ?, last_error = '' "
            f"WHERE id IN ({', '.join('?' * len(ids))}) AND state = 'running' AND claimed_by = ? "
            "AND attempts = 1",
            [now, now, *ids, me],
        )
        attempts = []
        for row in claimed:
            values = list(base)
            values[at["alarm_id"]] = row[0]
            values[at["due_at"]] = row[5]
            values[at["started_at"]] = now
            values[at["finished_at"]] = now
            attempts.append(values)
        conn.executemany(insert, attempts)
        conn.execute("COMMIT")
        done += len(claimed)


# -- timers ----------------------------------------------------------------------------------------


def timer_floor(n: int = 200, spacing: float = 0.01) -> dict[str, float]:
    """Lateness (ms) of a plain thread waking with ``Event.wait`` for ``n`` wall-clock
    deadlines ``spacing`` apart, as a worker's timer would: the floor of any Python timer here."""
    event = threading.Event()
    rng = random.Random(6)
    late = []
    for _ in range(n):
        deadline = time.time() + spacing * (0.5 + rng.random())
        while True:
            left = deadline - time.time()
            if left <= 0:
                break
            event.wait(left)
        late.append((time.time() - deadline) * 1000)
    late.sort()
    return {
        "p50": statistics.median(late),
        "p99": late[min(len(late) - 1, -(-99 * len(late) // 100) - 1)],
        "max": late[-1],
    }


if __name__ == "__main__":  # python -m benchmarks.raw: the timer floor, as JSON
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    every = float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
    print(json.dumps(timer_floor(count, every)))
    sys.stdout.flush()
    os._exit(0)
