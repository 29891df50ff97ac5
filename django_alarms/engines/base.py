"""The worker's writes and reads, written once with the ORM for every database.

An engine is the one place where a worker's statements are made: claims, lease renewals,
claims given back, completions, skipped occurrences, expired leases, the rescue's candidates,
new alarms and attempts, the window and the change feed, the database's clock, the worker's
own row and the purge. :class:`Engine` holds the ORM paths, which serve MySQL, MariaDB and any
other backend Django supports; :mod:`.postgresql` and :mod:`.sqlite` override what those
databases do faster with statements written by hand. Pick one with
:func:`django_alarms.engines.get_engine`. Nothing outside this package asks which database it
runs on (the system checks aside).

Every write about a claim is *fenced*: it goes through ``Alarm.objects.held_by(worker,
number)``, so a worker that froze past its lease, and whose alarm another worker took over,
changes nothing. What a claim given back or ended lets go of is :data:`LET_GO`.
"""

from __future__ import annotations

import functools
import logging
import operator
import uuid
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Case, F, Model, Q, Value, When

from django_alarms.claims import Claim, ClaimConflict, claims_from, stored_values
from django_alarms.engines.workers import WorkerRows
from django_alarms.models import Alarm, AlarmQuerySet, Attempt
from django_alarms.types import UNCHANGED, State
from django_alarms.validation import EARLIEST, storable_text

if TYPE_CHECKING:
    from django.db.models import Field

logger = logging.getLogger(__name__)

#: What a claim given back, expired by its end or ended sets: nobody holds the alarm.
LET_GO: Mapping[str, Any] = {"claimed_by": None, "claimed_at": None, "lease_until": None}

#: An Attempt row as :meth:`Engine.insert_attempts` takes it: a tuple of these columns.
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
    "result",
)

#: Columns of the window and the change feed: what a worker needs to arm an alarm.
ARM_FIELDS = ("id", "due_at", "handler", "timeout")

#: Where a window capped by MAX_IN_MEMORY ended: the last row's ``(due_at, id)``.
WindowKey = tuple[datetime, uuid.UUID]


class Ending(Protocol):
    """What :meth:`Engine.finish` writes about an attempt (``outcomes.Completion`` is one)."""

    claim: Claim
    state: str  # succeeded, failed, or scheduled (a retry, or the next occurrence)
    due_at: datetime | None
    occurrence_at: datetime | None
    fresh_budget: bool  # the attempt budget starts again (the next occurrence)
    payload: Any  # UNCHANGED, or the payload a Retry gave
    last_error: str


E = TypeVar("E", bound=Ending)


@dataclass(frozen=True)
class Served:
    """The alarms a worker serves: those of ``handlers`` in ``queues`` (``None``: any)."""

    handlers: Sequence[str] | None = None
    queues: Sequence[str] | None = None

    def filter(self, qs: AlarmQuerySet) -> AlarmQuerySet:
        for column, values in self.columns():
            qs = qs.filter(**{f"{column}__in": list(values)})
        return qs

    def columns(self) -> list[tuple[str, Sequence[str]]]:
        """The columns a hand-written query narrows, each with the values it may hold."""
        return [
            (column, values)
            for column, values in (("handler", self.handlers), ("queue", self.queues))
            if values is not None
        ]


#: Every alarm: a worker started without ``--handlers`` or ``--queues``.
EVERYTHING = Served()


@dataclass(frozen=True)
class Narrowing:
    """Which due alarms a claim may take, beyond "scheduled and due"."""

    ids: Sequence[uuid.UUID] | None = None
    served: Served = EVERYTHING
    handler_timeout_only: bool = False

    def filter(self, qs: AlarmQuerySet) -> AlarmQuerySet:
        if self.ids is not None:
            qs = qs.filter(pk__in=list(self.ids))
        qs = self.served.filter(qs)
        if self.handler_timeout_only:
            qs = qs.filter(timeout__isnull=True)
        return qs


class HandWrittenLoads:
    """The window and the change feed of an engine that writes their query by hand:
    ``_arm(condition, times, limit, served)`` reads the rows (``times`` fill the
    condition's placeholders)."""

    def window(
        self, *, until: datetime, limit: int, served: Served, after: WindowKey | None = None
    ) -> list[dict[str, Any]]:
        if after is None:
            return self._arm("due_at < %s", [until], limit, served)
        # A row comparison: both databases walk the (due_at, id) index from the key.
        return self._arm("due_at < %s AND (due_at, id) > (%s, %s)", [until, *after], limit, served)

    def changes(
        self, *, since: datetime, until: datetime, limit: int, served: Served
    ) -> list[dict[str, Any]]:
        return self._arm("updated_at > %s AND due_at <= %s", [since, until], limit, served)

    def _arm(
        self, condition: str, values: list[Any], limit: int, served: Served
    ) -> list[dict[str, Any]]:
        """Rows of :data:`ARM_FIELDS` meeting ``condition``, earliest first (ties by id);
        ``values`` (datetimes and alarm ids) fill its placeholders."""
        raise NotImplementedError


class Engine(WorkerRows):
    """The ORM paths of every statement a worker makes on database ``db``."""

    #: The query that reads the database's clock; None: take this machine's (a database
    #: without such a query here, or one that runs in this process).
    clock_query: ClassVar[str | None] = None
    #: Whether workers can be woken by LISTEN/NOTIFY (:meth:`wake_on_commit`), and the
    #: statement a worker's listener runs on its own connection.
    notifies: ClassVar[bool] = False
    listen_statement: ClassVar[str] = ""
    #: Whether :meth:`commits_seen` tells cheaply that another connection committed.
    watches_commits: ClassVar[bool] = False
    #: Whether :meth:`insert_stream` writes rows while the later ones are still being made.
    streams_inserts: ClassVar[bool] = False

    def __init__(self, db: str) -> None:
        self.db = db

    @property
    def connection(self) -> BaseDatabaseWrapper:
        # Looked up on every use: Django's connections are per thread.
        return connections[self.db]

    def alarms(self) -> AlarmQuerySet:
        return Alarm.objects.using(self.db)

    # -- claims and leases ------------------------------------------------------------------------

    def claim(
        self,
        *,
        worker_id: uuid.UUID,
        now: datetime,
        lease_until: datetime,
        ids: Sequence[uuid.UUID] | None = None,
        handlers: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        limit: int = 500,
        handler_timeout_only: bool = False,
    ) -> list[Claim]:
        """Claim up to ``limit`` alarms due at ``now``, earliest first: only ``ids`` when
        given, only alarms of ``handlers`` and in ``queues`` when given, only alarms without a
        timeout of their own (whose time limit, and so whose lease, is their handler's) when
        ``handler_timeout_only``. The attempt counter goes up by one; the lease is
        ``lease_until``.

        One short transaction: the claim must be visible to other workers the moment it
        commits, and no lock may be held while a handler runs.
        """
        if ids is not None and not ids:
            return []
        narrowing = Narrowing(ids, Served(handlers, queues), handler_timeout_only)
        return self._claim(worker_id, now, lease_until, narrowing, limit)

    def _claim(
        self,
        worker_id: uuid.UUID,
        now: datetime,
        lease_until: datetime,
        narrowing: Narrowing,
        limit: int,
    ) -> list[Claim]:
        qs = narrowing.filter(self.alarms().filter(state=State.SCHEDULED, due_at__lte=now))
        with transaction.atomic(using=self.db):
            if self.connection.features.has_select_for_update_skip_locked:
                qs = qs.select_for_update(skip_locked=True)
            rows = list(stored_values(qs.order_by("due_at"))[:limit])
            if not rows:
                return []
            # The rows are ours: locked (MySQL, MariaDB) or under SQLite's write lock. Should
            # a database give neither guarantee, the count tells, and nothing is claimed.
            updated = (
                self.alarms()
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
                    f"claimed {updated} of {len(rows)} selected alarms: another worker took "
                    "some between the read and the write (no row lock on this database)"
                )
        for row in rows:
            row["attempts"] += 1
        return claims_from(rows, worker_id, lease_until)

    def extend(
        self, *, worker_id: uuid.UUID, ids: Sequence[uuid.UUID], lease_until: datetime
    ) -> dict[uuid.UUID, int]:
        """Push the lease of the attempts this worker still holds to at least ``lease_until``.

        Returns the alarms that this worker holds until ``lease_until`` at least, with their
        attempt numbers; an id missing from it is no longer held (another worker's rescue
        took it over). The renewal is written first and the leases read afterwards: a row
        read back with this worker's id and a lease that reaches ``lease_until`` stays held
        until then, since only an expired lease is taken over.
        """
        if not ids:
            return {}
        held = self.alarms().held_by(worker_id).filter(pk__in=list(ids))
        held.filter(lease_until__lt=lease_until).update(lease_until=lease_until)
        return dict(held.filter(lease_until__gte=lease_until).values_list("pk", "attempts"))

    def release(self, *, claims: Sequence[Claim], now: datetime) -> int:
        """Give back claims that were never started: the alarm is scheduled again, as it was.
        The attempt counter goes back down, since no attempt was made."""
        released = 0
        for item in claims:
            released += self._held(item).update(attempts=item.number - 1, **_given_back(now))
        return released

    def release_unheld(
        self,
        *,
        worker_id: uuid.UUID,
        claimed_at: datetime,
        held: Container[uuid.UUID],
        now: datetime,
    ) -> int:
        """Give back what a claim statement made at ``claimed_at`` took for this worker, if
        the worker does not hold it: the statement's commit went through, but its answer was
        lost (the connection broke), so the worker never knew. As :meth:`release`, no attempt
        is counted. Returns how many were given back."""
        mine = self.alarms().held_by(worker_id).filter(claimed_at=claimed_at)
        ids = [pk for pk in mine.values_list("pk", flat=True) if pk not in held]
        if not ids:
            return 0
        return mine.filter(pk__in=ids).update(attempts=F("attempts") - 1, **_given_back(now))

    def expire(self, *, claims: Sequence[Claim], now: datetime) -> None:
        """End the leases of attempts left running at shutdown, so that the rescue sweep
        takes them over at once instead of when their leases would have passed."""
        for item in claims:
            self._held(item).update(lease_until=now)

    def skip(self, *, claims: Sequence[Claim], now: datetime) -> int:
        """Move skipped recurring claims to the occurrence they resume at, without an attempt
        (a claim without ``occurrence_at`` has none left: the alarm ends succeeded)."""
        moved = 0
        for item in claims:
            common = {"attempts": item.number - 1, **LET_GO, "updated_at": now}
            if item.occurrence_at is None:
                moved += self._held(item).update(state=State.SUCCEEDED, finished_at=now, **common)
            else:
                moved += self._held(item).update(
                    state=State.SCHEDULED,
                    due_at=item.occurrence_at,
                    occurrence_at=item.occurrence_at,
                    budget_start=item.number - 1,
                    **common,
                )
        return moved

    def _held(self, claim: Claim, fence: Mapping[str, Any] | None = None) -> AlarmQuerySet:
        """The alarm of ``claim``, if the claim is held still (and matches ``fence``)."""
        return (
            self.alarms()
            .held_by(claim.worker_id, claim.number)
            .filter(pk=claim.alarm_id, **(fence or {}))
        )

    # -- completions ------------------------------------------------------------------------------

    def finish(
        self,
        endings: Sequence[E],
        *,
        now: datetime,
        fence: Mapping[str, Any] | None = None,
    ) -> list[E]:
        """Write the alarms' next states, each fenced on its claim (and on ``fence``, which
        the rescue sweep uses to require an expired lease still); returns those written. Runs
        in the caller's transaction; the Attempt rows are the caller's to insert.

        The common case of a herd, one-off alarms that succeeded, is one statement per
        attempt number; the rest goes through :meth:`_finish_others`."""
        applied: list[E] = []
        simple: dict[tuple[int, uuid.UUID], list[E]] = {}
        others: list[E] = []
        for item in endings:
            if item.state == State.SUCCEEDED and item.claim.recurrence is None:
                # The fence is per (attempt number, worker): group by both.
                simple.setdefault((item.claim.number, item.claim.worker_id), []).append(item)
            else:
                others.append(item)
        for group in simple.values():
            held = self._finish_succeeded(group, now, fence)
            for item in group:
                (applied if item.claim.alarm_id in held else others).append(item)
        applied.extend(self._finish_others(others, now, fence))
        return applied

    def _finish_succeeded(
        self, group: Sequence[E], now: datetime, fence: Mapping[str, Any] | None
    ) -> Container[uuid.UUID]:
        """End the one-off alarms of ``group`` (one attempt number, one worker), which
        succeeded; returns the ids written. Here: one UPDATE, and when it did not find every
        row, none of them (:meth:`finish` writes those one by one, to learn which are held)."""
        first = group[0].claim
        ids = [item.claim.alarm_id for item in group]
        rows = self.alarms().held_by(first.worker_id, first.number).filter(pk__in=ids)
        with transaction.atomic(using=self.db):
            if rows.filter(**(fence or {})).update(**ending_fields(group[0], now)) == len(group):
                return set(ids)
            transaction.set_rollback(True, using=self.db)
        return ()

    def _finish_others(
        self, endings: Sequence[E], now: datetime, fence: Mapping[str, Any] | None
    ) -> list[E]:
        """One fenced UPDATE per alarm."""
        return [
            item
            for item in endings
            if self._held(item.claim, fence).update(**ending_fields(item, now))
        ]

    def insert_attempts(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert Attempt rows given as tuples in :data:`ATTEMPT_COLUMNS` order."""
        if not rows:
            return
        attempts = [Attempt(**dict(zip(ATTEMPT_COLUMNS, row, strict=True))) for row in rows]
        fields = [Attempt._meta.get_field(name) for name in ATTEMPT_COLUMNS]
        executemany(self.connection, Attempt, fields, attempts)

    # -- new alarms -------------------------------------------------------------------------------

    def insert_alarms(self, alarms: Sequence[Alarm], payload_json: Sequence[str | None]) -> None:
        """Insert new alarms, in the caller's transaction. ``payload_json[i]`` is the JSON
        text of ``alarms[i].payload``, made while validating it. Here: one INSERT statement
        sent with ``executemany``."""
        if not alarms:
            return
        # A payload of None is stored as SQL NULL, as Model.save() stores it.
        texts = {
            "payload": [
                None if alarm.payload is None else text
                for alarm, text in zip(alarms, payload_json, strict=True)
            ]
        }
        executemany(self.connection, Alarm, Alarm._meta.concrete_fields, alarms, texts)

    def insert_stream(self, pairs: Iterable[tuple[Alarm, str | None]]) -> None:
        """Insert ``(alarm, payload JSON text)`` pairs, which may come from a generator that
        validates and builds each alarm as it goes (should it raise, nothing is written: the
        caller's transaction rolls back). Here the pairs are made first, then inserted."""
        alarms, texts = [], []
        for alarm, text in pairs:
            alarms.append(alarm)
            texts.append(text)
        self.insert_alarms(alarms, texts)

    # -- what a worker reads ----------------------------------------------------------------------

    def rescue_candidates(self, *, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` running alarms whose lease passed before ``now``, oldest lease
        first, as :func:`claims.stored_values` rows with their holder and claim time."""
        qs = self.alarms().lease_expired(now).order_by("lease_until")
        return list(stored_values(qs, "claimed_by", "claimed_at", "lease_until")[:limit])

    def window(
        self, *, until: datetime, limit: int, served: Served, after: WindowKey | None = None
    ) -> list[dict[str, Any]]:
        """Scheduled alarms due before ``until`` (overdue ones included) that the worker
        ``served``, earliest first and ties by id, as dicts of :data:`ARM_FIELDS`; with
        ``after``, only those that come after that ``(due_at, id)`` in this order (a window
        that MAX_IN_MEMORY capped goes on from its last row). Index: alarms_due (due_at, id
        where state is scheduled)."""
        condition = Q(due_at__lt=until)
        if after is not None:
            due_at, alarm_id = after
            condition &= Q(due_at__gt=due_at) | Q(due_at=due_at, id__gt=alarm_id)
        return self._arm_rows(served, limit, condition)

    def changes(
        self, *, since: datetime, until: datetime, limit: int, served: Served
    ) -> list[dict[str, Any]]:
        """Scheduled alarms changed after ``since`` and due by ``until`` (inclusive: a capped
        window ends at its last row's due time, and others may be due at that instant too).
        Index: alarms_changed (updated_at where state is scheduled)."""
        return self._arm_rows(served, limit, Q(updated_at__gt=since, due_at__lte=until))

    def _arm_rows(self, served: Served, limit: int, condition: Q) -> list[dict[str, Any]]:
        qs = served.filter(self.alarms().filter(condition, state=State.SCHEDULED))
        return list(qs.order_by("due_at", "id").values(*ARM_FIELDS)[:limit])

    def estimated_row_count(self, model: type[Model]) -> int | None:
        """The planner's estimate of a table's rows, or None where the database keeps none."""
        return None

    # -- waking workers ---------------------------------------------------------------------------

    def wake_on_commit(self) -> None:
        """Wake listening workers when the current transaction commits. Here nothing: the
        workers find the change with their change feed."""

    def commits_seen(self) -> int:
        """A number that changes when another connection commits (:attr:`watches_commits`)."""
        raise NotImplementedError(f"{type(self).__name__} does not watch commits")


def executemany(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    fields: Sequence[Any],
    objs: Sequence[Model],
    json_text: Mapping[str, Sequence[str | None]] | None = None,
) -> None:
    """One INSERT statement sent with ``executemany``: one round of the driver however
    many rows, where ``bulk_create`` would split them into many statements to stay under
    SQLite's limit on query parameters. ``json_text`` gives, by attribute name, the JSON
    text of a JSON field's values, already made while validating them."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(str(field.column)) for field in fields)
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


def ending_fields(ending: Ending, now: datetime) -> dict[str, Any]:
    """The fields an ending writes to its alarm, as ``QuerySet.update()`` takes them."""
    fields: dict[str, Any] = {
        **LET_GO,
        "updated_at": now,
        "last_error": storable_text(ending.last_error),
    }
    if ending.state == State.SCHEDULED:
        # A cancel() that arrived while the attempt ran wins over the retry or the next
        # occurrence: the alarm ends cancelled instead of being scheduled again.
        fields["state"] = Case(
            When(cancel_requested=True, then=Value(State.CANCELLED.value)),
            default=Value(State.SCHEDULED.value),
        )
        fields["finished_at"] = Case(When(cancel_requested=True, then=Value(now)), default=None)
        fields["due_at"] = ending.due_at
        fields["occurrence_at"] = ending.occurrence_at
        if ending.fresh_budget:
            fields["budget_start"] = ending.claim.number
        if ending.payload is not UNCHANGED:
            fields["payload"] = ending.payload
    else:
        fields["state"] = ending.state
        fields["finished_at"] = now
    return fields


def _given_back(now: datetime) -> dict[str, Any]:
    """The fields of a claim given back unstarted (its attempt counter goes back down too)."""
    return {"state": State.SCHEDULED, **LET_GO, "updated_at": now}


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


def _db_value(
    field: Field[Any, Any], connection: BaseDatabaseWrapper
) -> Callable[[Any], Any] | None:
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


def _prepared(field: Field[Any, Any], connection: BaseDatabaseWrapper, value: Any) -> Any:
    return field.get_db_prep_save(value, connection)


def arm_rows(
    rows: Sequence[Sequence[Any]], moment: Callable[[Any], datetime]
) -> list[dict[str, Any]]:
    """Dicts of :data:`ARM_FIELDS` from ``(id, due, handler, timeout)`` rows read by hand;
    ``moment`` turns the database's form of a due time into an aware datetime.

    A due time it cannot turn into one (a row written around the API, out of range or not a
    time at all) is armed as due at the earliest storable instant, so that the alarm is
    claimed now and its attempt fails with an error naming its unreadable due time (the claim
    reads the row again and finds it so): one bad row never stops the worker's loads."""
    try:
        return [
            {"id": alarm_id, "due_at": moment(due), "handler": handler, "timeout": timeout}
            for alarm_id, due, handler, timeout in rows
        ]
    except (OverflowError, TypeError, ValueError):
        pass
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
