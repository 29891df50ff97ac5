"""The public API and service layer of django-alarms. Every change of an alarm goes through here.

::

    from django_alarms import alarms

    @alarms.handler("send_reminder", max_attempts=5, timeout=30)
    def send_reminder(alarm: alarms.AlarmContext) -> None:
        ...

    alarms.schedule("send_reminder", {"account": 7}, delay=timedelta(hours=1))

Every function validates its input before writing anything and raises
:class:`InvalidAlarm` (a ``ValueError``) naming the field and the value. Writes join the
caller's transaction: roll it back and the alarm was never scheduled.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from django_alarms import arguments, bulk, clock, writes
from django_alarms import recurrence as _recurrence
from django_alarms.backoff import Backoff
from django_alarms.conf import MAX_DURATION, alarm_settings
from django_alarms.engines import LET_GO, get_engine
from django_alarms.exceptions import (
    AlarmError,
    AlarmExists,
    InvalidAlarm,
    InvalidTransition,
    UnknownHandler,
    invalid,
)
from django_alarms.handlers import handler
from django_alarms.models import (
    KEY_MAX_LENGTH,
    NAME_MAX_LENGTH,
    Alarm,
    Attempt,
    Worker,
)
from django_alarms.recurrence import (
    Daily,
    Days,
    Hours,
    Minutes,
    Rate,
    Recurrence,
    Weekdays,
    WeekdaysAndSaturday,
)
from django_alarms.signals import alarm_cancelled, alarm_scheduled
from django_alarms.types import (
    ACTIVE_STATES,
    ALLOWED_FROM,
    CANCEL_REQUESTED_FROM,
    FINAL_STATES,
    AlarmContext,
    Fail,
    Outcome,
    Retry,
    Spec,
    State,
)
from django_alarms.validation import DEFAULT_QUEUE, seconds, whole

__all__ = [
    "AlarmContext",
    "AlarmError",
    "AlarmExists",
    "Backoff",
    "Daily",
    "Days",
    "Fail",
    "Hours",
    "InvalidAlarm",
    "InvalidTransition",
    "Minutes",
    "Outcome",
    "Rate",
    "Recurrence",
    "Retry",
    "Spec",
    "State",
    "UnknownHandler",
    "Weekdays",
    "WeekdaysAndSaturday",
    "batch",
    "cancel",
    "delete_finished",
    "handler",
    "pause",
    "purge",
    "reschedule",
    "resume",
    "retry",
    "run_now",
    "schedule",
    "schedule_many",
    "schedule_recurring",
]

AlarmRef = Alarm | uuid.UUID | str


def _db() -> str:
    return str(alarm_settings.DATABASE)


def _wake(db: str) -> None:
    """Wake listening workers when this transaction commits (where the database can; inserts
    notify by trigger). Elsewhere workers find the change with their change feed."""
    get_engine(db).wake_on_commit()


# -- scheduling ------------------------------------------------------------------------------


def schedule(
    handler: Any,
    payload: Any = None,
    *,
    at: datetime | None = None,
    delay: timedelta | float | None = None,
    key: str = "",
    name: str = "",
    id: uuid.UUID | str | None = None,
    if_exists: str = "error",
    max_attempts: int | None = None,
    timeout: timedelta | float | None = None,
    priority: int = 0,
    queue: str = DEFAULT_QUEUE,
) -> Alarm:
    """Schedule ``handler`` to receive ``payload`` at ``at`` or after ``delay`` (neither: now).

    ``handler`` is a registered name or a function decorated with :func:`handler`. ``at`` must
    be aware; a past ``at`` is due at once. ``id`` is an idempotency key (a UUID, or any string,
    mapped to a stable UUID): when an alarm with that id exists it is returned and nothing is
    written. A non-empty ``name`` makes ``(key, name)`` identify one active alarm; ``if_exists``
    says what happens when one exists: ``"error"`` raises :class:`AlarmExists`, ``"ignore"``
    returns it, ``"replace"`` moves it to the new time and payload. Among alarms due at the
    same instant a higher ``priority`` (-100 to 100) is delivered first; ``queue`` names the
    queue it is in (``run_alarms --queues`` serves chosen queues only).

    The row is written in the caller's transaction (on ``ALARMS["DATABASE"]``).
    """
    prepared = arguments.prepare(
        handler,
        payload,
        at=at,
        delay=delay,
        key=key,
        name=name,
        id=id,
        if_exists=if_exists,
        max_attempts=max_attempts,
        timeout=timeout,
        now=clock.now(),
        priority=priority,
        queue=queue,
    )
    return writes.write(prepared, _db())


def schedule_recurring(
    handler: Any,
    payload: Any = None,
    *,
    cron: str | None = None,
    every: timedelta | float | None = None,
    rate: Rate | None = None,
    timezone: Any = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    misfire: str = "once",
    key: str = "",
    name: str = "",
    id: uuid.UUID | str | None = None,
    if_exists: str = "error",
    max_attempts: int | None = None,
    timeout: timedelta | float | None = None,
    priority: int = 0,
    queue: str = DEFAULT_QUEUE,
) -> Alarm:
    """Schedule ``handler`` on a recurring schedule: exactly one of ``cron``, ``every``, ``rate``.

    ``cron`` has 5 fields, or 6 with seconds first, or is one of ``@yearly @annually @monthly
    @weekly @daily @midnight @hourly``; ``every`` is elapsed time (a timedelta or seconds);
    ``rate`` is one of :class:`Minutes`, :class:`Hours`, :class:`Days`, :class:`Daily`,
    :class:`Weekdays`, :class:`WeekdaysAndSaturday`. Wall-clock schedules are evaluated in
    ``timezone`` (an IANA name or tzinfo; default ``settings.TIME_ZONE``), correctly across DST.
    The first occurrence is the first instant of the schedule at or after ``start_at``
    (default: now); the alarm ends, ``succeeded``, when the next occurrence would fall after
    ``end_at``. ``misfire`` (``"once"``, ``"skip"``, ``"all"``) decides what happens when several
    occurrences were missed (see :doc:`/howto/recurring`).

    With ``if_exists="replace"``, scheduling the same definition again (a deploy that re-runs
    its set-up code) leaves the existing alarm untouched. ``priority`` and ``queue`` are
    :func:`schedule`'s.
    """
    now = clock.now()
    rec = _recurrence.build(
        cron=cron,
        every=every,
        rate=rate,
        timezone=timezone,
        start_at=start_at,
        end_at=end_at,
        misfire=misfire,
        now=now,
    )
    prepared = arguments.prepare(
        handler,
        payload,
        at=None,
        delay=None,
        key=key,
        name=name,
        id=id,
        if_exists=if_exists,
        max_attempts=max_attempts,
        timeout=timeout,
        now=now,
        recurrence=rec,
        priority=priority,
        queue=queue,
    )
    prepared.start_defaulted = start_at is None
    return writes.write(prepared, _db())


def schedule_many(specs: Iterable[Spec]) -> list[Alarm]:
    """Schedule many alarms at once, all or none, with a bounded handful of queries.

    Each :class:`Spec` takes the arguments of :func:`schedule`. All or none: one bad spec
    raises :class:`InvalidAlarm` (its message starts with ``specs[i]``) and none is written.
    Returns the alarms in the order of ``specs`` (for an existing id or an ignored (key, name),
    the existing alarm).
    """
    now = clock.now()
    if isinstance(specs, (str, bytes, Spec)) or not isinstance(specs, Iterable):
        raise invalid("specs", specs, "must be an iterable of alarms.Spec")
    items = list(specs)
    for index, spec in enumerate(items):
        if not isinstance(spec, Spec):
            raise invalid(f"specs[{index}]", spec, "must be an alarms.Spec")
    if not items:
        return []
    db = _db()
    if get_engine(db).streams_inserts and not any(s.id is not None or s.name for s in items):
        # Nothing to look up first (no idempotency id, no (key, name)): stream.
        return bulk.stream_many(items, now, db)
    prepared = [arguments.prepare_spec(index, spec, now) for index, spec in enumerate(items)]
    arguments.unique_ids_and_names(prepared)
    results: list[Alarm] = []
    new: list[Alarm] = []
    texts: list[str | None] = []
    with transaction.atomic(using=db):
        by_id, by_name = writes.existing(prepared, db)
        for index, item in enumerate(prepared):
            found = writes.resolve(item, by_id, by_name, db, where=f"specs[{index}]: ")
            if found is None:
                found = bulk.build(item.fields, db)
                new.append(found)
                texts.append(item.payload_json)
            results.append(found)
        get_engine(db).insert_alarms(new, texts)
    for alarm in new:
        alarm_scheduled.send(sender=Alarm, alarm=alarm, created=True)
    return results


@contextmanager
def batch() -> Iterator[None]:
    """Schedule several alarms all or none::

        with alarms.batch():
            alarms.schedule("a", ...)
            alarms.schedule("b", ...)   # raises -> neither a nor b is written

    A transaction on ``ALARMS["DATABASE"]`` (a savepoint inside an outer transaction).
    """
    with transaction.atomic(using=_db()):
        yield


# -- changing alarms ---------------------------------------------------------------------------


def _pk(alarm: object) -> uuid.UUID:
    if isinstance(alarm, Alarm):
        return alarm.pk
    if isinstance(alarm, uuid.UUID):
        return alarm
    if isinstance(alarm, str):
        try:
            return uuid.UUID(alarm)
        except ValueError:
            raise invalid("alarm", alarm, "is not an alarm id") from None
    raise invalid("alarm", alarm, "must be an Alarm, a UUID or an id string")


def _locked(alarm: AlarmRef, db: str) -> Alarm:
    pk = _pk(alarm)
    try:
        return Alarm.objects.using(db).select_for_update().get(pk=pk)
    except Alarm.DoesNotExist:
        raise invalid("alarm", str(pk), "no such alarm") from None


#: How a refusal names an operation whose function name is not a verb.
_VERBS = {"run_now": "run"}


def _refuse(alarm: Alarm, operation: str, *also: State) -> InvalidTransition:
    """The error for ``operation`` (a key of ``types.ALLOWED_FROM``) from ``alarm``'s state,
    naming the states it is allowed from (the table's, then ``also``)."""
    allowed = (*ALLOWED_FROM[operation], *also)
    return InvalidTransition(
        f"cannot {_VERBS.get(operation, operation)} alarm {alarm.id}: it is {alarm.state} "
        f"(only {' or '.join(str(state) for state in allowed)} alarms can be)"
    )


def _require(alarm: Alarm, operation: str) -> None:
    """Raise ``InvalidTransition`` unless ``alarm``'s state allows ``operation``."""
    if alarm.state not in ALLOWED_FROM[operation]:
        raise _refuse(alarm, operation)


def _save(alarm: Alarm, db: str, **changes: Any) -> Alarm:
    changes["updated_at"] = clock.now()
    for field, value in changes.items():
        setattr(alarm, field, value)
    alarm.save(using=db, update_fields=list(changes))
    _wake(db)
    return alarm


def _check_unique(alarm: Alarm, db: str) -> None:
    if not alarm.name:
        return
    clash = (
        Alarm.objects.using(db)
        .filter(key=alarm.key, name=alarm.name, state__in=ACTIVE_STATES)
        .exclude(pk=alarm.pk)
        .first()
    )
    if clash is not None:
        raise AlarmExists(
            f"key={alarm.key!r}, name={alarm.name!r}: alarm {clash.id} is already active "
            f"({clash.state}); cancel it first",
            existing=clash,
        )


def cancel(
    alarm: AlarmRef | None = None,
    *,
    key: str | None = None,
    name: str | None = None,
    reason: str = "",
) -> int:
    """Cancel one alarm, or every alarm with ``key`` (and ``name``); return how many.

    Scheduled, failed and paused alarms become ``cancelled`` at once. A running alarm finishes
    its current attempt and is then cancelled instead of being retried or moved to its next
    occurrence (it counts as cancelled here). Alarms that already ended are left alone.
    """
    if (alarm is None) == (key is None):
        raise invalid("alarm", alarm, f"give an alarm or a key, not both or neither (key={key!r})")
    reason = arguments.bounded_text("reason", reason, 255)
    if name is not None and key is None:
        raise invalid("name", name, "cancelling by name needs a key")
    if key is not None:
        arguments.bounded_text("key", key, KEY_MAX_LENGTH)
    if name is not None:
        arguments.bounded_text("name", name, NAME_MAX_LENGTH)
    cancellable = ALLOWED_FROM["cancel"]
    db = _db()
    now = clock.now()
    with transaction.atomic(using=db):
        if alarm is not None:
            rows = [_locked(alarm, db)]
            if rows[0].state not in (*cancellable, *CANCEL_REQUESTED_FROM, State.CANCELLED):
                raise _refuse(rows[0], "cancel", *CANCEL_REQUESTED_FROM)
        else:
            qs = Alarm.objects.using(db).select_for_update().filter(key=key)
            if name is not None:
                qs = qs.filter(name=name)
            rows = list(qs.filter(state__in=(*cancellable, *CANCEL_REQUESTED_FROM)))
        cancelled = []
        count = 0
        for row in rows:
            if row.state in cancellable:
                _save(
                    row,
                    db,
                    state=State.CANCELLED,
                    cancel_reason=reason,
                    finished_at=now,
                    cancel_requested=False,
                )
                cancelled.append(row)
                count += 1
            elif row.state in CANCEL_REQUESTED_FROM and not row.cancel_requested:
                _save(row, db, cancel_requested=True, cancel_reason=reason)
                count += 1
    for row in cancelled:
        alarm_cancelled.send(sender=Alarm, alarm=row, reason=reason)
    return count


def retry(alarm: AlarmRef) -> Alarm:
    """Put a ``failed`` or ``cancelled`` alarm back to ``scheduled``, due now, with a fresh
    attempt budget. Its attempt history is kept and attempt numbers go on counting."""
    db = _db()
    with transaction.atomic(using=db):
        row = _locked(alarm, db)
        _require(row, "retry")
        _check_unique(row, db)
        return _reopen(row, db, due_at=clock.now())


def _reopen(row: Alarm, db: str, *, due_at: datetime) -> Alarm:
    _save(
        row,
        db,
        state=State.SCHEDULED,
        due_at=due_at,
        budget_start=row.attempts,
        finished_at=None,
        cancel_requested=False,
        cancel_reason="",
        **LET_GO,
    )
    alarm_scheduled.send(sender=Alarm, alarm=row, created=False)
    return row


def run_now(alarm: AlarmRef) -> Alarm:
    """Make a ``scheduled`` alarm due now (a recurring alarm keeps its schedule: the current
    occurrence is delivered now and the next one follows the schedule)."""
    db = _db()
    with transaction.atomic(using=db):
        row = _locked(alarm, db)
        _require(row, "run_now")
        return _save(row, db, due_at=clock.now())


def reschedule(
    alarm: AlarmRef, *, at: datetime | None = None, delay: timedelta | float | None = None
) -> Alarm:
    """Move an alarm to ``at`` (aware) or ``delay`` from now.

    A scheduled or paused alarm keeps its state; a failed or cancelled one is scheduled again
    with a fresh attempt budget (like :func:`retry`, at the given time).
    """
    if at is None and delay is None:
        raise invalid("at", at, "give the new time as at= or delay=")
    due = arguments.due(at, delay, clock.now())
    db = _db()
    with transaction.atomic(using=db):
        row = _locked(alarm, db)
        _require(row, "reschedule")
        if row.state in (State.FAILED, State.CANCELLED):
            _check_unique(row, db)
            return _reopen(row, db, due_at=due)
        return _save(row, db, due_at=due)


def pause(alarm: AlarmRef) -> Alarm:
    """Stop a ``scheduled`` alarm from being delivered until :func:`resume`."""
    db = _db()
    with transaction.atomic(using=db):
        row = _locked(alarm, db)
        _require(row, "pause")
        return _save(row, db, state=State.PAUSED)


def resume(alarm: AlarmRef) -> Alarm:
    """Put a ``paused`` alarm back: a recurring alarm at its next future occurrence (it ends,
    ``succeeded``, if there is none before ``end_at``), a one-off at its due time (at once if
    that has passed)."""
    db = _db()
    now = clock.now()
    with transaction.atomic(using=db):
        row = _locked(alarm, db)
        _require(row, "resume")
        rec = row.get_recurrence()
        if rec is None or row.due_at > now:
            return _save(row, db, state=State.SCHEDULED)
        upcoming = rec.next_after(now)
        if upcoming is None:
            return _save(row, db, state=State.SUCCEEDED, finished_at=now)
        return _save(
            row,
            db,
            state=State.SCHEDULED,
            due_at=upcoming,
            occurrence_at=upcoming,
            budget_start=row.attempts,
        )


def purge(
    *,
    states: Iterable[str] = FINAL_STATES,
    older_than: timedelta,
    handlers: Iterable[str] = (),
    batch_size: int = 1_000,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete finished alarms (``succeeded``, ``failed``, ``cancelled``: never scheduled,
    running or paused ones) that finished more than ``older_than`` ago, of ``handlers`` when
    given, with their attempts. Each batch of ``batch_size`` is its own short transaction, so
    millions of rows are deleted without a long lock; ``on_batch(count)`` is called after each.
    Returns how many alarms were deleted, or with ``dry_run`` how many would be."""
    chosen = [str(state) for state in states]
    for state in chosen:
        if state not in FINAL_STATES:
            raise invalid(
                "states",
                state,
                f"must be among {', '.join(FINAL_STATES)}: only finished alarms are purged",
            )
    if not chosen:
        raise invalid("states", chosen, "must name at least one state")
    duration = seconds("older_than", older_than, high=MAX_DURATION)
    size = whole("batch_size", batch_size, low=1, high=100_000)
    names = [str(name) for name in handlers] or None
    engine = get_engine(_db())
    before = clock.now() - duration
    if dry_run:
        return engine.count_finished(states=chosen, finished_before=before, handlers=names)
    total = 0
    while True:
        count = engine.delete_finished(
            states=chosen, finished_before=before, handlers=names, batch=size
        )
        total += count
        if on_batch is not None and count:
            on_batch(count)
        if count < size:
            return total


#: The most alarms one :func:`delete_finished` call takes.
MAX_DELETE = 10_000


def delete_finished(alarms: Iterable[AlarmRef], *, states: Iterable[str] = FINAL_STATES) -> int:
    """Delete the given alarms that have finished, with their attempts; return how many.

    Only alarms in ``states`` (among ``succeeded``, ``failed``, ``cancelled``; all three by
    default) are deleted: a scheduled, running or paused alarm never is, and neither is one
    that left those states in the meantime (a retried one). Those, and ids that match no
    alarm, are left alone without an error, so that a caller can pass what it selected and
    compare the count. All in one transaction, with the rows locked; at most 10,000 ids::

        alarms.delete_finished([failed.id, cancelled.id], states=["failed", "cancelled"])  # 2
    """
    chosen = [str(state) for state in states]
    for state in chosen:
        if state not in FINAL_STATES:
            raise invalid(
                "states",
                state,
                f"must be among {', '.join(FINAL_STATES)}: only finished alarms are deleted",
            )
    if not chosen:
        raise invalid("states", chosen, "must name at least one state")
    if isinstance(alarms, (str, bytes, Alarm, uuid.UUID)) or not isinstance(alarms, Iterable):
        raise invalid("alarms", alarms, "must be an iterable of alarms or ids")
    ids = list(dict.fromkeys(_pk(alarm) for alarm in alarms))
    if len(ids) > MAX_DELETE:
        raise invalid("alarms", f"{len(ids)} ids", f"at most {MAX_DELETE} at a time")
    db = _db()
    deleted = 0
    with transaction.atomic(using=db):
        # Chunks keep each statement under SQLite's and Oracle's limits on parameters.
        for start in range(0, len(ids), 1_000):
            found = list(
                Alarm.objects.using(db)
                .select_for_update()
                .filter(pk__in=ids[start : start + 1_000], state__in=chosen)
                .values_list("pk", flat=True)
            )
            if not found:
                continue
            Attempt.objects.using(db).filter(alarm_id__in=found).delete()
            _, counts = Alarm.objects.using(db).filter(pk__in=found).delete()
            deleted += counts.get(Alarm._meta.label, 0)
    return deleted


# Models are part of the public vocabulary too: ``alarms.Alarm.objects.failed()``.
__all__ += ["Alarm", "Attempt", "Worker"]
