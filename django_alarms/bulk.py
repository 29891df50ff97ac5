"""Writing many alarms at once: the storage side of ``schedule_many``.

On PostgreSQL rows go through ``COPY ... FROM STDIN`` in binary format, from values that the
service layer already validated (the payload's JSON text is the one made while validating it),
several times faster than the ORM's ``bulk_create``. Elsewhere one ``INSERT`` is sent with
``executemany``. Either way it happens inside the caller's transaction. The worker's recorder
writes its Attempt rows the same way.
"""

from __future__ import annotations

import functools
import operator
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models.base import ModelState

from django_alarms.models import Alarm
from django_alarms.types import State

#: Values of the columns that a new alarm does not set itself.
_DEFAULTS: dict[str, Any] = {
    "state": State.SCHEDULED.value,
    "attempts": 0,
    "budget_start": 0,
    "timeout": None,
    "last_error": "",
    "recurrence": None,
    "occurrence_at": None,
    "claimed_by": None,
    "claimed_at": None,
    "lease_until": None,
    "cancel_requested": False,
    "cancel_reason": "",
    "finished_at": None,
}


def new_ids(count: int) -> list[uuid.UUID]:
    """``count`` random (version 4) UUIDs, as ``uuid.uuid4()`` makes them, from one read of
    the operating system's random source instead of one read each."""
    raw = os.urandom(16 * count)
    ids = []
    for start in range(0, 16 * count, 16):
        value = int.from_bytes(raw[start : start + 16], "big")
        value = (value & _CLEAR_VERSION_AND_VARIANT) | _VERSION_4_RFC_4122
        ids.append(uuid.UUID(int=value))
    return ids


#: uuid.UUID(version=4) sets these bits: the version nibble to 4, the variant to RFC 4122.
_CLEAR_VERSION_AND_VARIANT = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_4_RFC_4122 = (0x4000 << 64) | (0x8000 << 48)


def build(fields: dict[str, Any], db: str, new_id: uuid.UUID | None = None) -> Alarm:
    """An Alarm instance from validated field values, without the cost of ``Model.__init__``
    (the values are complete and already of the right types). ``new_id`` is the id of an alarm
    whose fields give none (default: a new random one)."""
    alarm_id = fields.get("id") or new_id or uuid.uuid4()
    return build_from(with_defaults(fields), db, alarm_id, fields.get("payload"))


def with_defaults(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Every attribute of a new alarm: ``fields`` over the defaults of those it does not set
    (made once for many alarms that share them, see :func:`build_from`)."""
    return {**_DEFAULTS, **fields}


def build_from(base: Mapping[str, Any], db: str, new_id: uuid.UUID, payload: Any) -> Alarm:
    """An Alarm instance from ``base`` (made by :func:`with_defaults`, possibly shared by many
    alarms) with an id and a payload of its own, without the cost of ``Model.__init__``."""
    alarm = Alarm.__new__(Alarm)
    values = alarm.__dict__
    values.update(base)
    values["id"] = new_id
    values["payload"] = payload
    state = ModelState()
    state.db = db
    state.adding = False
    alarm._state = state
    return alarm


def _executemany(
    connection: Any,
    model: Any,
    fields: Sequence[Any],
    objs: Sequence[Any],
    json_text: Mapping[str, Sequence[str | None]] | None = None,
) -> None:
    """One INSERT statement sent with ``executemany`` (SQLite, MySQL): one round of the
    driver however many rows, where ``bulk_create`` would split them into many statements
    to stay under SQLite's limit on query parameters. ``json_text`` gives, by attribute name,
    the JSON text of a JSON field's values, already made while validating them."""
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    json_text = json_text or {}
    getters = [operator.attrgetter(field.attname) for field in fields]
    converters = [_db_value(field, connection) for field in fields]
    rows = [
        [
            value if convert is None else convert(value)
            for convert, value in zip(converters, [get(obj) for get in getters], strict=True)
        ]
        for obj in objs
    ]
    for name, texts in json_text.items():
        at = [field.attname for field in fields].index(name)
        for row, text in zip(rows, texts, strict=True):
            if text is not None:
                row[at] = text
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


#: Fields whose values, once validated, go to the database as they are.
_AS_IS = frozenset(
    {
        "BigAutoField",
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "FloatField",
        "IntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
    }
)


def _db_value(field: Any, connection: Any) -> Callable[[Any], Any] | None:
    """How a validated value of ``field`` becomes the database's value: ``None`` for as it is,
    else the backend's adapter (times, ids) or the field's own preparation. Picked once per
    column instead of calling ``get_db_prep_save`` for every value."""
    kind = field.get_internal_type()
    if kind in _AS_IS:
        return None
    if kind == "DateTimeField":
        adapt: Callable[[Any], Any] = connection.ops.adapt_datetimefield_value
        return adapt
    if kind == "UUIDField" and not connection.features.has_native_uuid_field:
        return _uuid_hex
    return functools.partial(_prepared, field, connection)


def _uuid_hex(value: uuid.UUID | None) -> str | None:
    return None if value is None else value.hex


def _prepared(field: Any, connection: Any, value: Any) -> Any:
    return field.get_db_prep_save(value, connection)


#: PostgreSQL's names of the column types, as psycopg knows them.
_PG_TYPES = {
    "timestamp with time zone": "timestamptz",
    "double precision": "float8",
    "integer": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "boolean": "bool",
}


def _pg_type(field: Any, connection: Any) -> str:
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

        def dump(self, obj: Any) -> bytes:
            return b"\x01" + obj.encode()

    return JsonbTextDumper


def _copy(
    connection: Any, model: Any, fields: Sequence[Any], rows: Iterable[Sequence[Any]]
) -> None:
    """``COPY ... FROM STDIN (FORMAT BINARY)``: psycopg encodes each row in C and the server
    reads times, numbers and ids without parsing text (about twice as fast on both sides as
    the text format). The values of JSON columns are JSON text."""
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    types = [_pg_type(field, connection) for field in fields]
    with connection.cursor() as cursor:
        if "jsonb" in types:
            # On this cursor's own adapters only (psycopg copies them from the connection's).
            cursor.cursor.adapters.register_dumper(None, _jsonb_text_dumper())
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            write = copy.write_row
            for row in rows:
                write(row)


def insert(alarms: Sequence[Alarm], *, db: str, payload_json: Sequence[str | None]) -> None:
    """Insert new alarms. ``payload_json[i]`` is the JSON text of ``alarms[i].payload``."""
    if not alarms:
        return
    connection = connections[db]
    if connection.vendor != "postgresql":
        # A payload of None is stored as SQL NULL, as Model.save() stores it.
        texts = {
            "payload": [
                None if alarm.payload is None else text
                for alarm, text in zip(alarms, payload_json, strict=True)
            ]
        }
        _executemany(connection, Alarm, Alarm._meta.concrete_fields, alarms, texts)
        return
    copy_alarms(zip(alarms, payload_json, strict=True), db=db)


def copy_alarms(pairs: Iterable[tuple[Alarm, str | None]], *, db: str) -> None:
    """PostgreSQL: insert ``(alarm, payload JSON text)`` pairs with one COPY.

    ``pairs`` may be a generator that validates and builds each alarm as it goes: psycopg
    sends the rows in chunks while the next ones are made, so the server stores the first ones
    while Python prepares the rest. Should the generator raise, the COPY is aborted, and the
    caller's transaction rolls back (nothing is written).
    """
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

    _copy(connections[db], Alarm, fields, rows())


_ENCODER = DjangoJSONEncoder()


# -- completions (the worker's recorder) ---------------------------------------------------------

ATTEMPT_COLUMNS = (
    "alarm_id",
    "number",
    "outcome",
    "started_at",
    "finished_at",
    "handler",
    "due_at",
    "error",
    "traceback",
    "worker",
)


def insert_attempts(rows: Sequence[tuple[Any, ...]], *, db: str) -> None:
    """Insert Attempt rows given as tuples in :data:`ATTEMPT_COLUMNS` order."""
    if not rows:
        return
    from django_alarms.models import Attempt

    connection = connections[db]
    if connection.vendor != "postgresql":
        attempts = [Attempt(**dict(zip(ATTEMPT_COLUMNS, row, strict=True))) for row in rows]
        fields = [Attempt._meta.get_field(name) for name in ATTEMPT_COLUMNS]
        _executemany(connection, Attempt, fields, attempts)
        return
    fields = [Attempt._meta.get_field(name) for name in ATTEMPT_COLUMNS]
    _copy(connection, Attempt, fields, rows)


def finish_succeeded(
    *, db: str, ids: Sequence[uuid.UUID], worker_id: uuid.UUID, number: int, now: datetime
) -> set[uuid.UUID]:
    """PostgreSQL: end one-off alarms whose attempt ``number`` succeeded, fenced on the claim;
    return the ids that were still held (RETURNING tells which, so nothing is retried)."""
    connection = connections[db]
    table = connection.ops.quote_name(Alarm._meta.db_table)
    # The ids go as one array literal: one parameter, however many alarms.
    array = "{" + ",".join([alarm_id.hex for alarm_id in ids]) + "}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET state = %s, finished_at = %s, updated_at = %s, last_error = '', "
            "claimed_by = NULL, claimed_at = NULL, lease_until = NULL "
            "WHERE id = ANY(%s::uuid[]) AND state = %s AND claimed_by = %s AND attempts = %s "
            "RETURNING id",
            [State.SUCCEEDED, now, now, array, State.RUNNING, worker_id, number],
        )
        return {row[0] for row in cursor.fetchall()}
