"""Writing prepared alarms: the plain insert, the idempotency id and the (key, name) rule.

:mod:`django_alarms.alarms` validates the caller's arguments (:mod:`django_alarms.arguments`)
and hands the result here. One alarm without an id or a name is a single INSERT in the
caller's transaction; otherwise the alarms it could clash with are read first (the active one
with its (key, name) locked) and ``if_exists`` decides::

    prepared ──> existing(...) ──> resolve(...) ──> an existing alarm, replaced or not
                                         └────────> None: insert it

Both paths run inside a transaction on the alarms' database, so that a conflict found late (a
concurrent scheduler's insert) leaves the caller's transaction usable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import IntegrityError, transaction

from django_alarms.arguments import Prepared
from django_alarms.engines import get_engine
from django_alarms.exceptions import AlarmExists
from django_alarms.models import Alarm
from django_alarms.signals import alarm_scheduled
from django_alarms.types import ACTIVE_STATES, State

#: What replacing an alarm with a new definition overwrites (with ``recurrence`` and
#: ``occurrence_at``, which a one-off definition clears).
REPLACED_FIELDS = (
    "handler",
    "payload",
    "due_at",
    "max_attempts",
    "timeout",
    "priority",
    "queue",
    "trace_context",
    "updated_at",
)

ById = dict[uuid.UUID, Alarm]
ByName = dict[tuple[str, str], Alarm]


def write(prepared: Prepared, db: str) -> Alarm:
    """Write one prepared alarm, or return the alarm its id or (key, name) already names."""
    fields = prepared.fields
    if not prepared.id_given and not fields["name"]:
        # Nothing can clash: a single INSERT, in the caller's transaction if there is one.
        alarm = Alarm(**fields)
        alarm.save(force_insert=True, using=db)
        alarm_scheduled.send(sender=Alarm, alarm=alarm, created=True)
        return alarm
    with transaction.atomic(using=db):
        found = resolve(prepared, *existing([prepared], db), db)
        if found is not None:
            return found
        alarm = Alarm(**fields)
        try:
            # A savepoint, so that losing a race to a concurrent scheduler leaves the
            # caller's transaction usable.
            with transaction.atomic(using=db):
                alarm.save(force_insert=True, using=db)
        except IntegrityError:
            found = resolve(prepared, *existing([prepared], db), db)
            if found is None:
                raise
            return found
    alarm_scheduled.send(sender=Alarm, alarm=alarm, created=True)
    return alarm


def existing(prepared: Sequence[Prepared], db: str) -> tuple[ById, ByName]:
    """The stored alarms that ``prepared`` could clash with: by the ids the callers gave, and
    the active alarms with their (key, name), locked until the transaction ends. Two queries
    at most, whatever the number of alarms."""
    ids = [item.fields["id"] for item in prepared if item.id_given]
    names = {(item.fields["key"], item.fields["name"]) for item in prepared if item.fields["name"]}
    by_id: ById = {}
    if ids:
        by_id = {alarm.pk: alarm for alarm in Alarm.objects.using(db).filter(pk__in=ids)}
    by_name: ByName = {}
    if names:
        candidates = (
            Alarm.objects.using(db)
            .select_for_update()
            .filter(
                key__in={key for key, _ in names},
                name__in={name for _, name in names},
                state__in=ACTIVE_STATES,
            )
        )
        by_name = {
            (alarm.key, alarm.name): alarm
            for alarm in candidates
            if (alarm.key, alarm.name) in names
        }
    return by_id, by_name


def resolve(
    prepared: Prepared, by_id: ById, by_name: ByName, db: str, where: str = ""
) -> Alarm | None:
    """The alarm to hand back instead of inserting ``prepared``, if any: the alarm with its id,
    or the active one with its (key, name) as ``if_exists`` says (``"ignore"`` returns it,
    ``"replace"`` gives it the new definition, ``"error"`` raises :class:`AlarmExists`, its
    message starting with ``where``)."""
    fields = prepared.fields
    if prepared.id_given and fields["id"] in by_id:
        return by_id[fields["id"]]
    current = by_name.get((fields["key"], fields["name"])) if fields["name"] else None
    if current is None:
        return None
    if prepared.if_exists == "ignore":
        return current
    if prepared.if_exists == "replace":
        return replace(current, prepared, db)
    raise AlarmExists(
        f"{where}key={fields['key']!r}, name={fields['name']!r}: an active alarm with this key "
        f"and name exists ({current.id}, {current.state}); pass if_exists='ignore' or "
        "'replace' to reuse it",
        existing=current,
    )


def replace(existing: Alarm, prepared: Prepared, db: str) -> Alarm:
    """Give the active alarm ``existing`` the definition ``prepared`` (unless it already has
    it); its attempt history is kept and the new definition starts a fresh attempt budget."""
    fields = prepared.fields
    if same_definition(existing, prepared):
        return existing
    if existing.state == State.RUNNING:
        raise AlarmExists(
            f"key={existing.key!r}, name={existing.name!r}: the existing alarm {existing.id} is "
            "running and cannot be replaced until its attempt ends",
            existing=existing,
        )
    changes = {field: fields[field] for field in REPLACED_FIELDS}
    changes["recurrence"] = fields.get("recurrence")
    changes["occurrence_at"] = fields.get("occurrence_at")
    changes["budget_start"] = existing.attempts
    changes["last_error"] = ""
    updated = (
        Alarm.objects.using(db)
        .filter(pk=existing.pk, state__in=[State.SCHEDULED, State.PAUSED])
        .update(**changes)
    )
    if not updated:  # claimed by a worker between our read and our write
        raise AlarmExists(
            f"key={existing.key!r}, name={existing.name!r}: the existing alarm {existing.id} "
            "started running and cannot be replaced until its attempt ends",
            existing=existing,
        )
    for field, value in changes.items():
        setattr(existing, field, value)
    get_engine(db).wake_on_commit()
    alarm_scheduled.send(sender=Alarm, alarm=existing, created=False)
    return existing


def same_definition(alarm: Alarm, prepared: Prepared) -> bool:
    """Whether a recurring alarm already has this definition (a deploy re-running its set-up).

    A ``start_at`` that the caller left to default ("now") is not part of the definition.
    """
    fields = prepared.fields
    if alarm.recurrence is None or fields.get("recurrence") is None:
        return False
    stored, new = dict(alarm.recurrence), dict(fields["recurrence"])
    if prepared.start_defaulted:
        stored.pop("start_at", None)
        new.pop("start_at", None)
    return (
        stored == new
        and alarm.handler == fields["handler"]
        and alarm.payload == fields["payload"]
        and alarm.max_attempts == fields["max_attempts"]
        and alarm.timeout == fields["timeout"]
        and alarm.priority == fields["priority"]
        and alarm.queue == fields["queue"]
    )
