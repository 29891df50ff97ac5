"""Writing many alarms at once: the storage side of ``schedule_many``.

On PostgreSQL rows go through ``COPY ... FROM STDIN`` in text format, built here from values
that the service layer already validated (the payload's JSON text is the one made while
validating it), which is several times faster than the ORM's ``bulk_create``. Elsewhere
``bulk_create`` is used. Either way it is one round trip per few thousand rows, inside the
caller's transaction.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
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

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


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
    values = dict(_DEFAULTS)
    values.update(fields)
    if "id" not in values:
        values["id"] = new_id or uuid.uuid4()
    alarm = Alarm.__new__(Alarm)
    alarm.__dict__.update(values)
    state = ModelState()
    state.db = db
    state.adding = False
    alarm._state = state
    return alarm


def _executemany(connection: Any, model: Any, fields: Sequence[Any], objs: Sequence[Any]) -> None:
    """One INSERT statement sent with ``executemany`` (SQLite, MySQL): one round of the
    driver however many rows, where ``bulk_create`` would split them into many statements
    to stay under SQLite's limit on query parameters."""
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    rows = [
        [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in fields]
        for obj in objs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _text(value: Any) -> str:
    return "\\N" if value is None else str(value).translate(_ESCAPES)


def _plain(value: Any) -> str:
    return "\\N" if value is None else str(value)


def _flag(value: Any) -> str:
    return "\\N" if value is None else ("t" if value else "f")


def _json(value: Any) -> str:
    if value is None:
        return "\\N"
    return json.dumps(value, cls=DjangoJSONEncoder).translate(_ESCAPES)


def _formatter(field: Any) -> Callable[[Any], str]:
    """How one column's values are written in COPY's text format."""
    kind = field.get_internal_type()
    if kind == "JSONField":
        return _json
    if kind in ("CharField", "TextField"):
        return _text
    if kind == "BooleanField":
        return _flag
    if kind == "DateTimeField":
        cache: dict[datetime, str] = {}

        def moment(value: Any) -> str:
            # Alarms scheduled together share their created/updated times and often their
            # due time: format each distinct instant once.
            if value is None:
                return "\\N"
            text = cache.get(value)
            if text is None:
                text = cache[value] = value.isoformat()
            return text

        return moment
    return _plain


def insert(alarms: Sequence[Alarm], *, db: str, payload_json: Sequence[str | None]) -> None:
    """Insert new alarms. ``payload_json[i]`` is the JSON text of ``alarms[i].payload``."""
    if not alarms:
        return
    connection = connections[db]
    if connection.vendor != "postgresql":
        _executemany(connection, Alarm, Alarm._meta.concrete_fields, alarms)
        return
    fields = [f for f in Alarm._meta.concrete_fields if f.attname != "payload"]
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    columns += ", " + connection.ops.quote_name(str(Alarm._meta.get_field("payload").column))
    rows = [alarm.__dict__ for alarm in alarms]
    # Alarms scheduled together share most of their values (state, counters, the times of
    # creation, often the handler and the due time): a column whose value is the same in every
    # row is formatted once into the row template, and only the others are formatted per row.
    first = rows[0]
    parts: list[str] = []
    varying: list[tuple[str, Callable[[Any], str]]] = []
    for field in fields:
        attname, fmt = field.attname, _formatter(field)
        value = first[attname]
        if attname != "id" and all(row[attname] == value for row in rows):
            parts.append(fmt(value).replace("%", "%%"))
        else:
            parts.append("%s")
            varying.append((attname, fmt))
    template = "\t".join(parts) + "\t%s"
    lines = [
        template
        % (
            *[fmt(row[attname]) for attname, fmt in varying],
            "\\N" if text is None else text.translate(_ESCAPES),
        )
        for row, text in zip(rows, payload_json, strict=True)
    ]
    sql = f"COPY {connection.ops.quote_name(Alarm._meta.db_table)} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for start in range(0, len(lines), 5000):
            copy.write("\n".join(lines[start : start + 5000]) + "\n")


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
    moment: dict[datetime, str] = {}

    def when(value: datetime | None) -> str:
        if value is None:
            return "\\N"
        text = moment.get(value)
        if text is None:
            text = moment[value] = value.isoformat()
        return text

    lines = [
        f"{alarm_id.hex}\t{number}\t{outcome}\t{when(started)}\t{when(finished)}\t"
        f"{_text(handler)}\t{when(due)}\t{_text(error)}\t{_text(trace)}\t{_text(worker)}"
        for alarm_id, number, outcome, started, finished, handler, due, error, trace, worker in rows
    ]
    table = connection.ops.quote_name(Attempt._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(name) for name in ATTEMPT_COLUMNS)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        copy.write("\n".join(lines) + "\n")


def finish_succeeded(
    *, db: str, ids: Sequence[uuid.UUID], worker_id: uuid.UUID, attempt: int, now: datetime
) -> set[uuid.UUID]:
    """PostgreSQL: end one-off alarms whose attempt ``attempt`` succeeded, fenced on the claim;
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
            [State.SUCCEEDED, now, now, array, State.RUNNING, worker_id, attempt],
        )
        return {row[0] for row in cursor.fetchall()}
