"""A claim: the attempt a worker holds, and how it is read from the alarm's row.

A claim turns ``scheduled`` alarms that are due into ``running`` ones held by one worker, with
the attempt number incremented and a lease (the statements are the engines',
:mod:`django_alarms.engines`). Every later write about that attempt (finish, extend, release)
is *fenced*: conditional on the alarm still being ``running`` under the same worker and
attempt number, so a worker that froze past its lease and woke up changes nothing.

A :class:`Claim` is built from a row in one of two ways: :func:`claims_from` for rows read
through the ORM with :func:`stored_values`, :func:`decoded` for the rows an ``UPDATE ...
RETURNING`` claim reads back in the order of :data:`CLAIM_FIELDS`. Either way a row that
cannot be read still becomes a claim, whose ``problem`` says why.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db import DatabaseError
from django.db.models import TextField
from django.db.models.functions import Cast

from django_alarms.recurrence import Recurrence
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
    "priority",
    "trace_context",
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
    #: Among alarms due at the same instant, a higher priority starts first.
    priority: int = 0
    #: The W3C traceparent of the span that scheduled the alarm ("" for none).
    trace_context: str = ""
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
    schedules = _Schedules()
    for row in rows:
        problem = ""
        try:
            payload = _stored_json_or_none(row["payload_text"])
        except ValueError as exc:
            payload, problem = None, unreadable("payload", exc)
        try:
            recurrence, schedule = schedules.of(row["recurrence_text"])
        except ValueError as exc:
            recurrence, schedule = None, None
            problem = problem or unreadable("recurrence", exc)
        holder = worker_id or row["claimed_by"] or uuid.UUID(int=0)
        lease = lease_until or row["lease_until"]
        claims.append(_claim_from(row, holder, lease, payload, recurrence, problem, schedule))
    return claims


class _Schedules:
    """The stored schedules of the rows of one read, each decoded once: alarms read together
    often share theirs (a Recurrence is immutable, and the decoded JSON is only read). One
    that cannot be read as a schedule is left to the claim's own ``__post_init__``, which
    names the problem; JSON that cannot be read raises ValueError."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[Any, Recurrence | None]] = {}

    def of(self, text: Any) -> tuple[Any, Recurrence | None]:
        if text is None:
            return None, None
        found = self.known.get(text) if isinstance(text, str) else None
        if found is None:
            value = _stored_json_or_none(text)
            try:
                schedule = Recurrence.from_stored(value)
            except Exception:
                schedule = None
            found = (value, schedule)
            if isinstance(text, str):
                self.known[text] = found
        return found


def _claim_from(
    row: dict[str, Any],
    worker_id: uuid.UUID,
    lease_until: datetime,
    payload: Any,
    recurrence: Any,
    problem: str,
    schedule: Recurrence | None,
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
        priority=row["priority"],
        trace_context=row["trace_context"],
        worker_id=worker_id,
        lease_until=lease_until,
        problem=problem,
        schedule=schedule,
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


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_micros(micros: int) -> datetime:
    """A time read as whole microseconds since the epoch (PostgreSQL's claim reads them so)."""
    return EPOCH + timedelta(microseconds=micros)


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


#: What a one-off alarm's (absent) schedule decodes to.
_ONE_OFF: tuple[None, None] = (None, None)


def decoded(
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

    schedules = _Schedules()  # ... and often their schedule

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
                recurrence=(
                    stored := _ONE_OFF if recurrence is None else schedules.of(recurrence)
                )[0],
                occurrence_at=None if occurrence is None else when(occurrence),
                last_error=last_error,
                worker_id=worker_id,
                lease_until=lease_until,
                priority=priority,
                trace_context=trace_context,
                schedule=stored[1],
            )
            for (
                alarm_id, handler, key, name, payload, due, attempts, budget_start,
                max_attempts, timeout, created, recurrence, occurrence, last_error, priority,
                trace_context,
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
    """One row of :func:`decoded`, read column by column: what cannot be read is replaced
    (a time by the earliest storable one, so that the alarm counts as due; JSON by None) and
    named in the claim's ``problem``."""
    (
        alarm_id, handler, key, name, payload, due, attempts, budget_start, max_attempts,
        timeout, created, recurrence, occurrence, last_error, priority, trace_context,
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
        priority=priority,
        trace_context=trace_context,
        problem=problems[0] if problems else "",
    )
