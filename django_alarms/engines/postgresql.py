"""PostgreSQL: statements written by hand where a worker makes them for every alarm.

Each override below is measured (docs/performance.md) and pinned by a test:

- the claim is one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED))
  RETURNING``, with times read back as microseconds since the epoch;
- completions are one ``UPDATE ... FROM unnest(...)`` per batch (a statement per attempt
  number for one-off alarms that succeeded), fenced in the statement, ``RETURNING`` the rows
  still held;
- new alarms and attempts go through a binary ``COPY``;
- the window and the change feed read due times as microseconds too;
- LISTEN/NOTIFY wakes the workers.
"""

from __future__ import annotations

import functools
import operator
import uuid
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model

from django_alarms.claims import CLAIM_FIELDS, EPOCH, Claim, decoded, from_micros, uuid_array
from django_alarms.engines.base import (
    ATTEMPT_COLUMNS,
    LET_GO,
    E,
    Engine,
    HandWrittenLoads,
    Narrowing,
    Served,
    arm_rows,
)
from django_alarms.models import NOTIFY_CHANNEL, Alarm, Attempt
from django_alarms.types import UNCHANGED, State
from django_alarms.validation import storable_text

if TYPE_CHECKING:
    from django.db.models import Field

_TIMES = frozenset({"due_at", "created_at", "occurrence_at"})
_JSON = frozenset({"payload", "recurrence"})

#: What the claim reads back, in the order of CLAIM_FIELDS. Times come as whole microseconds
#: since the epoch: turning those into datetimes is much cheaper than parsing timestamp text,
#: and this runs for every alarm a worker delivers.
RETURNING = ", ".join(
    f"(extract(epoch from {name}) * 1000000)::bigint"
    if name in _TIMES
    else f"{name}::text"
    if name in _JSON
    else name
    for name in CLAIM_FIELDS
)

_TABLE = f'"{Alarm._meta.db_table}"'
_LET_GO = ", ".join(f"{column} = NULL" for column in LET_GO)


class PostgreSQLEngine(HandWrittenLoads, Engine):
    clock_query = "SELECT clock_timestamp()"
    notifies = True
    listen_statement = f'LISTEN "{NOTIFY_CHANNEL}"'
    streams_inserts = True

    def _claim(
        self,
        worker_id: uuid.UUID,
        now: datetime,
        lease_until: datetime,
        narrowing: Narrowing,
        limit: int,
    ) -> list[Claim]:
        # One statement: pick the due rows that no other worker holds (SKIP LOCKED), flip
        # them to running and read them back. Two workers claiming the same instant get
        # disjoint rows.
        conditions = ["state = %s", "due_at <= %s"]
        params: list[Any] = [State.SCHEDULED, now]
        if narrowing.ids is not None:
            conditions.append("id = ANY(%s::uuid[])")
            params.append(uuid_array(narrowing.ids))
        for column, values in narrowing.served.columns():
            conditions.append(f"{column} = ANY(%s)")
            params.append(list(values))
        if narrowing.handler_timeout_only:
            conditions.append("timeout IS NULL")
        # ``id = ANY(ARRAY(subquery))``, not ``id IN (subquery)``: for the latter PostgreSQL's
        # planner prefers a hash semi-join fed by a sequential scan of the whole table, so a
        # claim of 500 rows would read every row of the table (30 ms with 100,000 rows, and
        # growing with the table); the array is computed once and the rows are fetched
        # through the primary key.
        sql = (
            f"UPDATE {_TABLE} SET state = %s, attempts = attempts + 1, claimed_by = %s, "
            "claimed_at = %s, lease_until = %s, updated_at = %s "
            f"WHERE id = ANY(ARRAY(SELECT id FROM {_TABLE} WHERE {' AND '.join(conditions)} "
            "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)) "
            f"RETURNING {RETURNING}"
        )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [State.RUNNING, worker_id, now, lease_until, now, *params, limit])
            raw = cursor.fetchall()
        return decoded(raw, worker_id, lease_until, from_micros)

    # -- completions ------------------------------------------------------------------------------

    def _finish_succeeded(
        self, group: Sequence[E], now: datetime, fence: Mapping[str, Any] | None
    ) -> Container[uuid.UUID]:
        if fence is not None:
            return super()._finish_succeeded(group, now, fence)
        first = group[0].claim
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {_TABLE} SET state = %s, finished_at = %s, updated_at = %s, "
                f"last_error = '', {_LET_GO} "
                "WHERE id = ANY(%s::uuid[]) AND state = %s AND claimed_by = %s "
                "AND attempts = %s RETURNING id",
                [
                    State.SUCCEEDED,
                    now,
                    now,
                    uuid_array(item.claim.alarm_id for item in group),
                    State.RUNNING,
                    first.worker_id,
                    first.number,
                ],
            )
            return {row[0] for row in cursor.fetchall()}

    def _finish_others(
        self, endings: Sequence[E], now: datetime, fence: Mapping[str, Any] | None
    ) -> list[E]:
        """One statement for every ending of one worker that keeps its payload (a recurring
        alarm's next occurrence, a retry, a failure); the rest one by one."""
        if fence is not None or len(endings) < 2:
            return super()._finish_others(endings, now, fence)
        by_worker: dict[uuid.UUID, list[E]] = {}
        one_by_one: list[E] = []
        for item in endings:
            if item.payload is UNCHANGED:
                by_worker.setdefault(item.claim.worker_id, []).append(item)
            else:
                one_by_one.append(item)
        applied = super()._finish_others(one_by_one, now, fence)
        for worker_id, group in by_worker.items():
            held = self._finish_many(worker_id, group, now)
            applied.extend(item for item in group if item.claim.alarm_id in held)
        return applied

    def _finish_many(
        self, worker_id: uuid.UUID, endings: Sequence[E], now: datetime
    ) -> set[uuid.UUID]:
        # Each column goes as one array literal, made here: psycopg would quote every element
        # of a list parameter one by one, which cost more than the rest of the statement.
        # Times go as microseconds since the epoch (exact integers, cheap to make and read).
        ids, numbers, states, dues, occurrences, budgets, errors = [], [], [], [], [], [], []
        micros: dict[datetime | None, str] = {None: "NULL"}

        def micro(at: datetime | None) -> str:
            text = micros.get(at)
            if text is None:
                text = micros[at] = str((at - EPOCH) // _MICROSECOND)  # type: ignore[operator]
            return text

        for item in endings:
            ids.append(item.claim.alarm_id.hex)
            numbers.append(str(item.claim.number))
            states.append(str(item.state))
            dues.append(micro(item.due_at))
            occurrences.append(micro(item.occurrence_at))
            budgets.append(str(item.claim.number) if item.fresh_budget else "NULL")
            errors.append(_array_text(storable_text(item.last_error)))
        # A cancel() that arrived while the attempt ran wins over the retry or the next
        # occurrence: the alarm ends cancelled instead of being scheduled again.
        again = "v.state = 'scheduled'"
        moment = "timestamptz 'epoch' + interval '1 microsecond' * v.{}"
        sql = (
            f"UPDATE {_TABLE} AS a SET "
            f"state = CASE WHEN {again} AND a.cancel_requested THEN 'cancelled' "
            "ELSE v.state END, "
            f"finished_at = CASE WHEN {again} AND NOT a.cancel_requested THEN NULL "
            "ELSE %s END, "
            f"due_at = CASE WHEN {again} THEN {moment.format('due')} ELSE a.due_at END, "
            f"occurrence_at = CASE WHEN {again} THEN {moment.format('occurrence')} "
            "ELSE a.occurrence_at END, "
            f"budget_start = CASE WHEN {again} AND v.budget_start IS NOT NULL "
            "THEN v.budget_start ELSE a.budget_start END, "
            f"last_error = v.last_error, updated_at = %s, {_LET_GO} "
            "FROM unnest(%s::uuid[], %s::int[], %s::text[], %s::bigint[], %s::bigint[], "
            "%s::int[], %s::text[]) "
            "AS v(id, number, state, due, occurrence, budget_start, last_error) "
            "WHERE a.id = v.id AND a.state = %s AND a.claimed_by = %s AND a.attempts = v.number "
            "RETURNING a.id"
        )
        columns = (ids, numbers, states, dues, occurrences, budgets, errors)
        arrays = ["{" + ",".join(column) + "}" for column in columns]
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [now, now, *arrays, State.RUNNING, worker_id])
            return {row[0] for row in cursor.fetchall()}

    def insert_attempts(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            fields = [Attempt._meta.get_field(name) for name in ATTEMPT_COLUMNS]
            self._copy(Attempt, fields, rows)

    # -- new alarms -------------------------------------------------------------------------------

    def insert_alarms(self, alarms: Sequence[Alarm], payload_json: Sequence[str | None]) -> None:
        if alarms:
            self.insert_stream(zip(alarms, payload_json, strict=True))

    def insert_stream(self, pairs: Iterable[tuple[Alarm, str | None]]) -> None:
        """One binary COPY. ``pairs`` may be a generator that validates and builds each alarm
        as it goes: psycopg sends the rows in chunks while the next ones are made, so the
        server stores the first ones while Python prepares the rest. Should the generator
        raise, the COPY is aborted, and the caller's transaction rolls back."""
        fields = Alarm._meta.concrete_fields
        attnames = [field.attname for field in fields]
        payload_at = attnames.index("payload")
        recurrence_at = attnames.index("recurrence")
        encode = _ENCODER.encode
        values_of = operator.itemgetter(*attnames)

        def rows() -> Iterator[list[Any]]:
            for alarm, text in pairs:
                row = list(values_of(alarm.__dict__))
                if row[payload_at] is not None:  # None: SQL NULL, as Model.save() stores it
                    row[payload_at] = encode(row[payload_at]) if text is None else text
                if row[recurrence_at] is not None:
                    row[recurrence_at] = encode(row[recurrence_at])
                yield row

        self._copy(Alarm, fields, rows())

    def _copy(
        self, model: type[Model], fields: Sequence[Any], rows: Iterable[Sequence[Any]]
    ) -> None:
        """``COPY ... FROM STDIN (FORMAT BINARY)``: psycopg encodes each row in C and the
        server reads times, numbers and ids without parsing text (about twice as fast on both
        sides as the text format). The values of JSON columns are JSON text."""
        connection = self.connection
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        columns = ", ".join(quote(str(field.column)) for field in fields)
        types = [_pg_type(field, connection) for field in fields]
        with connection.cursor() as cursor:
            if "jsonb" in types:
                # On this cursor's own adapters only (psycopg copies them from the connection's).
                cursor.cursor.adapters.register_dumper(None, _jsonb_text_dumper())
            copy_sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
            with cursor.cursor.copy(copy_sql) as copy:
                copy.set_types(types)
                write = copy.write_row
                for row in rows:
                    write(row)

    # -- what a worker reads ----------------------------------------------------------------------

    def _arm(
        self, condition: str, values: list[Any], limit: int, served: Served
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, (extract(epoch from due_at) * 1000000)::bigint, handler, timeout "
            f"FROM {_TABLE} WHERE state = %s AND {condition}"
        )
        params: list[Any] = [State.SCHEDULED, *values]
        for column, chosen in served.columns():
            sql += f" AND {column} = ANY(%s)"
            params.append(list(chosen))
        sql += " ORDER BY due_at, id LIMIT %s"
        params.append(limit)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return arm_rows(rows, lambda due: EPOCH + timedelta(microseconds=due))

    def estimated_row_count(self, model: type[Model]) -> int | None:
        # pg_class.reltuples is kept up to date by autovacuum and ANALYZE; it is -1 for a
        # table that was never analysed.
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.connection.ops.quote_name(model._meta.db_table)],
            )
            row = cursor.fetchone()
        if row is None or row[0] is None or row[0] < 0:
            return None
        return int(row[0])

    def wake_on_commit(self) -> None:
        # Inserts notify by trigger; other changes (a cancel, a move) notify here. NOTIFY is
        # delivered at commit, and not at all on a rollback.
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])


_ENCODER = DjangoJSONEncoder()
_MICROSECOND = timedelta(microseconds=1)


def _array_text(text: str) -> str:
    """``text`` as an element of a PostgreSQL array literal: quoted, with ``"`` and ``\\``
    escaped (an unquoted element would be read as NULL, or split at commas and braces)."""
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


#: PostgreSQL's names of the column types, as psycopg knows them.
_PG_TYPES = {
    "timestamp with time zone": "timestamptz",
    "double precision": "float8",
    "integer": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "boolean": "bool",
}


def _pg_type(field: Field[Any, Any], connection: Any) -> str:
    name = str(field.db_type(connection)).split("(", 1)[0]
    return _PG_TYPES.get(name, name)


@functools.cache
def _jsonb_text_dumper() -> type:
    """A psycopg dumper for ``jsonb`` columns of a binary COPY whose values are JSON *text*
    already (made once, while validating): the binary form of ``jsonb`` is a version byte
    and the text. It replaces one ``Jsonb`` wrapper per value and psycopg's generic JSON
    dumper, which would encode the value again."""
    from psycopg.adapt import Dumper
    from psycopg.postgres import types
    from psycopg.pq import Format

    class JsonbTextDumper(Dumper):
        format = Format.BINARY
        oid = types["jsonb"].oid

        def dump(self, obj: str) -> bytes:
            return b"\x01" + obj.encode()

    return JsonbTextDumper
