"""Claims and leases: the conditional writes that let any number of workers share one database.

A claim turns ``scheduled`` alarms that are due into ``running`` ones held by one worker, with
the attempt number incremented and a lease. Every later write about that attempt (finish,
extend, release) is *fenced*: conditional on the alarm still being ``running`` under the same
worker and attempt number, so a worker that froze past its lease and woke up changes nothing.

Times are passed in by the caller: a worker passes its estimate of the database's clock, so
that workers on machines with skewed clocks agree; ``run_due`` passes the test's ``now``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import F, TextField
from django.db.models.functions import Cast

from django_alarms.models import Alarm
from django_alarms.recurrence import Recurrence
from django_alarms.types import State
from django_alarms.validation import EARLIEST

#: The columns a claim reads back: everything a delivery needs, and nothing else.
CLAIM_FIELDS = (
    "id",
    "handler",
    "key",
    "name",
    "payload",
    "due_at",
    "attempts",
    "budget_start",
    "max_attempts",
    "timeout",
    "created_at",
    "recurrence",
    "occurrence_at",
    "last_error",
)


class ClaimConflict(DatabaseError):
    """A claim raced with another worker's on a database without row locks; it was undone."""


@dataclass(slots=True)
class Claim:
    """A claimed attempt: ids and plain values only, safe to pass between threads and processes.

    Treat it as immutable (use ``dataclasses.replace``); it is not frozen only because a frozen
    dataclass is several times slower to build, and a worker builds one per delivery.
    """

    alarm_id: uuid.UUID
    handler: str
    key: str
    name: str
    payload: Any
    due_at: datetime
    number: int  # the Attempt.number of this attempt (counted over the alarm's life)
    budget_start: int
    max_attempts: int
    timeout: float | None  # the alarm's own limit in seconds; None: the handler's or the setting
    created_at: datetime
    recurrence: dict[str, Any] | None
    occurrence_at: datetime | None
    last_error: str
    worker_id: uuid.UUID
    lease_until: datetime
    #: Why the stored row could not be read as it is (a payload that is not JSON, a stored
    #: time out of range); "" when it could. Such an attempt fails without calling the handler.
    problem: str = ""
    #: The stored ``recurrence``, decoded once when the claim is made (without validating it
    #: again: it was validated when it was scheduled); None for a one-off alarm, or when the
    #: stored schedule cannot be read (``problem`` says why).
    schedule: Recurrence | None = None

    def __post_init__(self) -> None:
        if self.recurrence is not None and self.schedule is None and not self.problem:
            try:
                self.schedule = Recurrence.from_stored(self.recurrence)
            except Exception as exc:  # written by a newer release, or by hand
                self.problem = unreadable("recurrence", exc)

    def __hash__(self) -> int:
        # An attempt is named by its alarm, its number and its worker (claims compare equal
        # field by field, and may be kept in sets and dict keys).
        return hash((self.alarm_id, self.number, self.worker_id))

    @property
    def budget_attempt(self) -> int:
        """The attempt number within the current budget (1-based), as handlers see it."""
        return self.number - self.budget_start

    @property
    def intended_at(self) -> datetime:
        """The time this delivery is for: the occurrence of a recurring alarm, else due_at."""
        return self.occurrence_at or self.due_at


def uuid_array(ids: Iterable[uuid.UUID]) -> str:
    """A PostgreSQL ``uuid[]`` literal: one parameter, however many ids (the 32-digit hex form
    is valid uuid input and cheaper to make than the dashed one)."""
    return "{" + ",".join([alarm_id.hex for alarm_id in ids]) + "}"


def claims_from(
    rows: Iterable[dict[str, Any]],
    worker_id: uuid.UUID | None = None,
    lease_until: datetime | None = None,
) -> list[Claim]:
    """Claims from rows read through the ORM with :func:`stored_values` (JSON as text).
    Without ``worker_id`` and ``lease_until``, each row's ``claimed_by`` and ``lease_until``
    (nobody's: the nil UUID)."""
    claims = []
    for row in rows:
        problem = ""
        try:
            payload = _stored_json_or_none(row["payload_text"])
        except ValueError as exc:
            payload, problem = None, unreadable("payload", exc)
        try:
            recurrence = _stored_json_or_none(row["recurrence_text"])
        except ValueError as exc:
            recurrence, problem = None, problem or unreadable("recurrence", exc)
        holder = worker_id or row["claimed_by"] or uuid.UUID(int=0)
        lease = lease_until or row["lease_until"]
        claims.append(_claim_from(row, holder, lease, payload, recurrence, problem))
    return claims


def _claim_from(
    row: dict[str, Any],
    worker_id: uuid.UUID,
    lease_until: datetime,
    payload: Any,
    recurrence: Any,
    problem: str,
) -> Claim:
    return Claim(
        alarm_id=row["id"],
        handler=row["handler"],
        key=row["key"],
        name=row["name"],
        payload=payload,
        due_at=row["due_at"],
        number=row["attempts"],
        budget_start=row["budget_start"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        created_at=row["created_at"],
        recurrence=recurrence,
        occurrence_at=row["occurrence_at"],
        last_error=row["last_error"],
        worker_id=worker_id,
        lease_until=lease_until,
        problem=problem,
    )


def unreadable(column: str, exc: BaseException) -> str:
    """The error of an attempt whose stored row cannot be read."""
    return (
        f"UnreadableAlarm: the stored {column} of this alarm cannot be read "
        f"({type(exc).__name__}: {str(exc)[:300]}); fix or cancel the alarm"
    )


def stored_values(qs: Any, *extra: str) -> Any:
    """``qs.values()`` of :data:`CLAIM_FIELDS` (and ``extra``), with the JSON columns as the
    text the database holds: Django's JSONField would decode every row of the result at once,
    so one row that is not JSON would fail all of them. :func:`claims_from` decodes row by row."""
    plain = [name for name in CLAIM_FIELDS if name not in _JSON_FIELDS]
    text = {f"{name}_text": Cast(name, TextField()) for name in _JSON_FIELDS}
    return qs.values(*plain, *extra, **text)


_JSON_FIELDS = ("payload", "recurrence")


def _stored_json_or_none(text: Any) -> Any:
    if text is None:
        return None
    if not isinstance(text, str):  # a driver that decoded it already
        return text
    try:
        return _stored_json(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def claim(
    *,
    db: str,
    worker_id: uuid.UUID,
    now: datetime,
    lease_until: datetime,
    ids: Sequence[uuid.UUID] | None = None,
    handlers: Sequence[str] | None = None,
    limit: int = 500,
    handler_timeout_only: bool = False,
) -> list[Claim]:
    """Claim up to ``limit`` alarms due at ``now``, earliest first: only ``ids`` when given,
    only alarms of ``handlers`` when given, only alarms without a timeout of their own (whose
    time limit, and so whose lease, is their handler's) when ``handler_timeout_only``.

    One short transaction: the claim must be visible to other workers the moment it commits,
    and no lock may be held while a handler runs.
    """
    if ids is not None and not ids:
        return []
    where = _Where(ids, handlers, handler_timeout_only)
    connection = connections[db]
    if connection.vendor == "postgresql":
        return _claim_postgresql(db, worker_id, now, lease_until, where, limit)
    if connection.vendor == "sqlite" and connection.features.can_return_rows_from_bulk_insert:
        # SQLite 3.35+ has UPDATE ... RETURNING: one statement, like PostgreSQL.
        return _claim_sqlite(db, worker_id, now, lease_until, where, limit)
    qs = Alarm.objects.using(db).filter(state=State.SCHEDULED, due_at__lte=now)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    if handlers is not None:
        qs = qs.filter(handler__in=list(handlers))
    if handler_timeout_only:
        qs = qs.filter(timeout__isnull=True)
    with transaction.atomic(using=db):
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        rows = list(stored_values(qs.order_by("due_at"))[:limit])
        if not rows:
            return []
        # The rows are ours: locked (MySQL, MariaDB) or under SQLite's write lock. Should a
        # database give neither guarantee, the count tells, and nothing is claimed.
        updated = (
            Alarm.objects.using(db)
            .filter(pk__in=[row["id"] for row in rows], state=State.SCHEDULED)
            .update(
                state=State.RUNNING,
                attempts=F("attempts") + 1,
                claimed_by=worker_id,
                claimed_at=now,
                lease_until=lease_until,
                updated_at=now,
            )
        )
        if updated != len(rows):
            raise ClaimConflict(
                f"claimed {updated} of {len(rows)} selected alarms: another worker took some "
                "between the read and the write (no row lock on this database)"
            )
    for row in rows:
        row["attempts"] += 1
    return claims_from(rows, worker_id, lease_until)


#: What the PostgreSQL claim reads back. Times come as whole microseconds since the epoch:
#: turning those into datetimes is much cheaper than parsing timestamp text, and this runs for
#: every alarm a worker delivers.
_PG_RETURNING = (
    "id, handler, key, name, payload::text, "
    "(extract(epoch from due_at) * 1000000)::bigint, attempts, budget_start, max_attempts, "
    "timeout, (extract(epoch from created_at) * 1000000)::bigint, recurrence::text, "
    "(extract(epoch from occurrence_at) * 1000000)::bigint, last_error"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


#: The scanner that JSONDecoder.__init__ sets up (C when available); typeshed does not list it.
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _stored_json(text: str) -> Any:
    """Decode JSON text as the database returns it (PostgreSQL's canonical ``jsonb`` text, or
    Django's own encoding on other databases). The decoder's scanner is called directly:
    ``json.loads`` first checks for surrounding whitespace, which costs three times the
    decoding of a small payload. Anything unusual goes to ``json.loads``."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def _decoded(
    raw: Iterable[Sequence[Any]],
    worker_id: uuid.UUID,
    lease_until: datetime,
    moment: Callable[[Any], datetime],
) -> list[Claim]:
    """Claims from the rows an ``UPDATE ... RETURNING`` claim read back, in the order of
    ``CLAIM_FIELDS``; ``moment`` turns the database's form of a time into an aware datetime.
    Sorted by due time: RETURNING does not keep the subquery's order."""
    loads = _stored_json
    times: dict[Any, datetime] = {}  # alarms claimed together often share their times

    def when(value: Any) -> datetime:
        at = times.get(value)
        if at is None:
            at = times[value] = moment(value)
        return at

    rows = raw if isinstance(raw, list) else list(raw)
    try:
        claims = [
            Claim(
                alarm_id=alarm_id if isinstance(alarm_id, uuid.UUID) else uuid.UUID(alarm_id),
                handler=handler,
                key=key,
                name=name,
                payload=loads(payload) if payload is not None else None,
                due_at=when(due),
                number=attempts,
                budget_start=budget_start,
                max_attempts=max_attempts,
                timeout=timeout,
                created_at=when(created),
                recurrence=loads(recurrence) if recurrence is not None else None,
                occurrence_at=None if occurrence is None else when(occurrence),
                last_error=last_error,
                worker_id=worker_id,
                lease_until=lease_until,
            )
            for (
                alarm_id, handler, key, name, payload, due, attempts, budget_start,
                max_attempts, timeout, created, recurrence, occurrence, last_error,
            ) in rows
        ]  # fmt: skip
    except (ValueError, OverflowError, RecursionError, TypeError):
        # A row this version cannot read: the claim is committed already, so every row must
        # still become a claim. Decoded again one by one; the unreadable ones carry a problem
        # and fail their own attempt.
        claims = [_decoded_one(row, worker_id, lease_until, moment) for row in rows]
    claims.sort(key=lambda item: item.due_at)
    return claims


def _decoded_one(
    row: Sequence[Any],
    worker_id: uuid.UUID,
    lease_until: datetime,
    moment: Callable[[Any], datetime],
) -> Claim:
    """One row of :func:`_decoded`, read column by column: what cannot be read is replaced
    (a time by the earliest storable one, so that the alarm counts as due; JSON by None) and
    named in the claim's ``problem``."""
    (
        alarm_id, handler, key, name, payload, due, attempts, budget_start, max_attempts,
        timeout, created, recurrence, occurrence, last_error,
    ) = row  # fmt: skip
    problems: list[str] = []

    def time_of(column: str, value: Any) -> datetime:
        try:
            return moment(value)
        except (ValueError, OverflowError, TypeError) as exc:
            problems.append(unreadable(column, exc))
            return EARLIEST

    def json_of(column: str, value: Any) -> Any:
        try:
            return _stored_json_or_none(value)
        except ValueError as exc:
            problems.append(unreadable(column, exc))
            return None

    return Claim(
        alarm_id=alarm_id if isinstance(alarm_id, uuid.UUID) else uuid.UUID(alarm_id),
        handler=handler,
        key=key,
        name=name,
        payload=json_of("payload", payload),
        due_at=time_of("due_at", due),
        number=attempts,
        budget_start=budget_start,
        max_attempts=max_attempts,
        timeout=timeout,
        created_at=time_of("created_at", created),
        recurrence=json_of("recurrence", recurrence),
        occurrence_at=None if occurrence is None else time_of("occurrence_at", occurrence),
        last_error=last_error,
        worker_id=worker_id,
        lease_until=lease_until,
        problem=problems[0] if problems else "",
    )


@dataclass(frozen=True)
class _Where:
    """Which due alarms a claim may take."""

    ids: Sequence[uuid.UUID] | None
    handlers: Sequence[str] | None
    handler_timeout_only: bool

    def clauses(self, *, arrays: bool) -> tuple[list[str], list[Any]]:
        """The SQL conditions and parameters that narrow a claim beyond "scheduled and due".
        With ``arrays`` (PostgreSQL) a list is one array parameter, however long; otherwise
        (SQLite) each value has a placeholder of its own."""
        conditions: list[str] = []
        params: list[Any] = []
        if self.ids is not None:
            if arrays:
                conditions.append("id = ANY(%s::uuid[])")
                params.append(uuid_array(self.ids))
            else:
                conditions.append(f"id IN ({', '.join(['%s'] * len(self.ids))})")
                params.extend(alarm_id.hex for alarm_id in self.ids)
        if self.handlers is not None:
            if arrays:
                conditions.append("handler = ANY(%s)")
                params.append(list(self.handlers))
            else:
                conditions.append(f"handler IN ({', '.join(['%s'] * len(self.handlers))})")
                params.extend(self.handlers)
        if self.handler_timeout_only:
            conditions.append("timeout IS NULL")
        return conditions, params


def _claim_postgresql(
    db: str,
    worker_id: uuid.UUID,
    now: datetime,
    lease_until: datetime,
    where: _Where,
    limit: int,
) -> list[Claim]:
    # One statement: pick the due rows that no other worker holds (SKIP LOCKED), flip them to
    # running and read them back. Two workers claiming the same instant get disjoint rows.
    table = Alarm._meta.db_table
    narrower, extra = where.clauses(arrays=True)
    conditions = ["state = %s", "due_at <= %s", *narrower]
    params: list[Any] = [State.SCHEDULED, now, *extra]
    # ``id = ANY(ARRAY(subquery))``, not ``id IN (subquery)``: for the latter PostgreSQL's
    # planner prefers a hash semi-join fed by a sequential scan of the whole table, so a claim
    # of 500 rows would read every row of the table (30 ms with 100,000 rows, and growing with
    # the table); the array is computed once and the rows are fetched through the primary key.
    sql = (
        f'UPDATE "{table}" SET state = %s, attempts = attempts + 1, claimed_by = %s, '
        "claimed_at = %s, lease_until = %s, updated_at = %s "
        f'WHERE id = ANY(ARRAY(SELECT id FROM "{table}" WHERE {" AND ".join(conditions)} '
        "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)) "
        f"RETURNING {_PG_RETURNING}"
    )
    connection = connections[db]
    with connection.cursor() as cursor:
        cursor.execute(sql, [State.RUNNING, worker_id, now, lease_until, now, *params, limit])
        raw = cursor.fetchall()
    return _decoded(raw, worker_id, lease_until, _from_micros)


_SQLITE_RETURNING = (
    "id, handler, key, name, payload, due_at, attempts, budget_start, max_attempts, timeout, "
    "created_at, recurrence, occurrence_at, last_error"
)


def _sqlite_time(value: datetime | str) -> datetime:
    # Django stores aware datetimes on SQLite as UTC without an offset; its connection hands
    # them back as naive datetimes (declared types are converted) or, in some cases, as text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc)


def _claim_sqlite(
    db: str,
    worker_id: uuid.UUID,
    now: datetime,
    lease_until: datetime,
    where: _Where,
    limit: int,
) -> list[Claim]:
    # One statement under SQLite's write lock: the rows it changes are ours.
    connection = connections[db]
    ops = connection.ops
    table = Alarm._meta.db_table
    narrower, extra = where.clauses(arrays=False)
    conditions = ["state = %s", "due_at <= %s", *narrower]
    params: list[Any] = [State.SCHEDULED.value, ops.adapt_datetimefield_value(now), *extra]
    moment = ops.adapt_datetimefield_value
    sql = (
        f'UPDATE "{table}" SET state = %s, attempts = attempts + 1, claimed_by = %s, '
        "claimed_at = %s, lease_until = %s, updated_at = %s "
        f'WHERE id IN (SELECT id FROM "{table}" WHERE {" AND ".join(conditions)} '
        "ORDER BY due_at LIMIT %s) "
        f"RETURNING {_SQLITE_RETURNING}"
    )
    with transaction.atomic(using=db), connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                State.RUNNING.value,
                worker_id.hex,
                moment(now),
                moment(lease_until),
                moment(now),
                *params,
                limit,
            ],
        )
        raw = cursor.fetchall()
    return _decoded(raw, worker_id, lease_until, _sqlite_time)


def extend(
    *, db: str, worker_id: uuid.UUID, ids: Sequence[uuid.UUID], lease_until: datetime
) -> dict[uuid.UUID, int]:
    """Push the lease of the attempts this worker still holds to at least ``lease_until``.

    Returns the alarms that this worker holds until ``lease_until`` at least, with their
    attempt numbers; an id missing from it is no longer held (another worker's rescue took
    it over). The renewal is written first and the leases read afterwards: a row read back
    with this worker's id and a lease that reaches ``lease_until`` stays held until then,
    since only an expired lease is taken over.
    """
    if not ids:
        return {}
    held = Alarm.objects.using(db).filter(
        pk__in=list(ids), state=State.RUNNING, claimed_by=worker_id
    )
    held.filter(lease_until__lt=lease_until).update(lease_until=lease_until)
    return dict(held.filter(lease_until__gte=lease_until).values_list("pk", "attempts"))


def release(*, db: str, claims: Sequence[Claim], now: datetime) -> int:
    """Give back claims that were never started: the alarm is scheduled again, as it was.

    The attempt counter goes back down, since no attempt was made.
    """
    released = 0
    for item in claims:
        released += (
            Alarm.objects.using(db)
            .filter(
                pk=item.alarm_id,
                state=State.RUNNING,
                claimed_by=item.worker_id,
                attempts=item.number,
            )
            .update(attempts=item.number - 1, **_given_back(now))
        )
    return released


def release_unheld(
    *,
    db: str,
    worker_id: uuid.UUID,
    claimed_at: datetime,
    held: Container[uuid.UUID],
    now: datetime,
) -> int:
    """Give back what a claim statement made at ``claimed_at`` took for this worker, if the
    worker does not hold it: the statement's commit went through, but its answer was lost (the
    connection broke), so the worker never knew. As :func:`release`, no attempt is counted.
    Returns how many were given back."""
    mine = Alarm.objects.using(db).filter(
        state=State.RUNNING, claimed_by=worker_id, claimed_at=claimed_at
    )
    ids = [pk for pk in mine.values_list("pk", flat=True) if pk not in held]
    if not ids:
        return 0
    return mine.filter(pk__in=ids).update(attempts=F("attempts") - 1, **_given_back(now))


def _given_back(now: datetime) -> dict[str, Any]:
    """The fields of a claim given back unstarted (its attempt counter goes back down too)."""
    return {
        "state": State.SCHEDULED,
        "claimed_by": None,
        "claimed_at": None,
        "lease_until": None,
        "updated_at": now,
    }
