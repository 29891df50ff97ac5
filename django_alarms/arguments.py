"""What a caller passes to ``schedule()`` and its kin, checked: each argument validated (or
:class:`InvalidAlarm` naming it), and a new alarm's fields made from them.

The service layer (:mod:`django_alarms.alarms`) calls these before it writes anything;
``schedule_many`` prepares specs that share their arguments once (``bulk.SharedPreparer``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone as dj_timezone

from django_alarms import tracing, validation
from django_alarms.conf import alarm_settings
from django_alarms.exceptions import InvalidAlarm, invalid
from django_alarms.handlers import HandlerSpec, registry
from django_alarms.models import KEY_MAX_LENGTH, NAME_MAX_LENGTH
from django_alarms.recurrence import Recurrence
from django_alarms.types import Spec

IF_EXISTS = ("error", "ignore", "replace")
# A fixed namespace turns idempotency keys that are not UUIDs into stable UUIDs.
ID_NAMESPACE = uuid.UUID("5f0c8a1e-2d54-4b1f-9a55-7c1f0d2b8e31")


def bounded_text(field: str, value: object, max_length: int) -> str:
    return validation.text(field, value, max_length=max_length)


def aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise invalid(field, value, "must be a datetime")
    if dj_timezone.is_naive(value):
        raise invalid(field, value, "must be an aware datetime (it has no time zone)")
    return validation.storable(field, value)


def delay_of(value: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise invalid("delay", value, "must be a timedelta or a number of seconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid("delay", value, "must be a finite number of seconds")
    try:
        result = value if isinstance(value, timedelta) else timedelta(seconds=value)
    except OverflowError:
        raise invalid("delay", value, "is too large") from None
    if result < timedelta(0):
        raise invalid("delay", value, "must not be negative")
    return result


def due(at: object, delay: object, now: datetime) -> datetime:
    if at is not None and delay is not None:
        raise invalid("at", at, f"give at or delay, not both (delay={delay!r})")
    if at is not None:
        return aware("at", at)
    if delay is not None:
        return validation.storable_after("delay", now, delay_of(delay))
    return now


def alarm_id_of(value: object) -> uuid.UUID | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or not value:
        raise invalid("id", value, "must be a UUID or a non-empty string")
    try:
        return uuid.UUID(value)
    except ValueError:
        # Hashed, never stored: but its text must be encodable to be hashed.
        return uuid.uuid5(ID_NAMESPACE, validation.text("id", value))


def payload_text(value: object, spec: HandlerSpec) -> str:
    """Validate the payload; return its JSON text."""
    text = validation.payload_json("payload", value)
    if spec.validate is not None:
        try:
            spec.validate(value)
        except InvalidAlarm:
            raise
        except Exception as exc:  # the hook's own way of saying no
            raise invalid(
                "payload", value, f"rejected by {spec.name!r}'s validate(): {exc}"
            ) from exc
    return text


def max_attempts_of(value: object, spec: HandlerSpec) -> int:
    if value is None:
        return int(spec.max_attempts or alarm_settings.MAX_ATTEMPTS)
    return validation.whole("max_attempts", value)


def timeout_of(value: object) -> float | None:
    if value is None:
        return None
    limit = validation.seconds("timeout", value, high=validation.MAX_TIMEOUT)
    if isinstance(value, (int, float)):
        return float(value)  # as given: within the limit, so an int fits in a float
    return limit.total_seconds()


def if_exists_of(value: object) -> str:
    if value not in IF_EXISTS:
        raise invalid("if_exists", value, f"must be one of {', '.join(IF_EXISTS)}")
    return str(value)


@dataclass(slots=True)
class Prepared:
    """A validated alarm, ready to be written."""

    fields: dict[str, Any]
    id_given: bool
    if_exists: str
    payload_json: str
    start_defaulted: bool = False


def queue_of(queue: object) -> str:
    """A queue name: a non-empty text of at most ``QUEUE_MAX_LENGTH`` characters."""
    name = validation.text("queue", queue, max_length=validation.QUEUE_MAX_LENGTH)
    if not name.strip():
        raise invalid("queue", queue, "a queue name must not be empty")
    return name


def prepare(
    handler: object,
    payload: Any,
    *,
    at: object,
    delay: object,
    key: object,
    name: object,
    id: object,
    if_exists: object,
    max_attempts: object,
    timeout: object,
    now: datetime,
    recurrence: Recurrence | None = None,
    priority: object = 0,
    queue: object = validation.DEFAULT_QUEUE,
) -> Prepared:
    spec = registry.resolve(handler)
    fields: dict[str, Any] = {
        "priority": validation.whole(
            "priority", priority, low=validation.PRIORITY_MIN, high=validation.PRIORITY_MAX
        ),
        "queue": queue_of(queue),
        "handler": spec.name,
        "key": bounded_text("key", key, KEY_MAX_LENGTH),
        "name": bounded_text("name", name, NAME_MAX_LENGTH),
        "payload": payload,
        "max_attempts": max_attempts_of(max_attempts, spec),
        "timeout": timeout_of(timeout),
        "created_at": now,
        "updated_at": now,
        "trace_context": tracing.current(),
    }
    payload_json = payload_text(payload, spec)
    policy = if_exists_of(if_exists)
    alarm_id = alarm_id_of(id)
    if alarm_id is not None:
        fields["id"] = alarm_id
    if recurrence is None:
        fields["due_at"] = due(at, delay, now)
    else:
        first = recurrence.first()
        if first is None and recurrence.ends_by_horizon():
            raise invalid(
                "start_at",
                recurrence.start_at,
                f"the schedule has no occurrence from start_at to {validation.LATEST.date()} "
                "(UTC), the latest time an alarm can hold",
            )
        if first is None:
            raise invalid(
                "end_at", recurrence.end_at, "the schedule has no occurrence before end_at"
            )
        fields["due_at"] = first
        fields["occurrence_at"] = first
        fields["recurrence"] = recurrence.to_json()
    return Prepared(
        fields=fields,
        id_given=alarm_id is not None,
        if_exists=policy,
        payload_json=payload_json,
    )


def prepare_spec(index: int, spec: Spec, now: datetime) -> Prepared:
    try:
        return prepare(
            spec.handler,
            spec.payload,
            at=spec.at,
            delay=spec.delay,
            key=spec.key,
            name=spec.name,
            id=spec.id,
            if_exists=spec.if_exists,
            max_attempts=spec.max_attempts,
            timeout=spec.timeout,
            now=now,
            priority=spec.priority,
            queue=spec.queue,
        )
    except InvalidAlarm as exc:
        raise type(exc)(f"specs[{index}]: {exc}", field=exc.field, value=exc.value) from None


def unique_ids_and_names(
    prepared: Sequence[Prepared],
) -> tuple[dict[uuid.UUID, int], dict[tuple[str, str], int]]:
    """The ids and (key, name) pairs that prepared specs give, each with the index of its
    spec; :class:`InvalidAlarm` when two specs give the same one."""
    seen_ids: dict[uuid.UUID, int] = {}
    seen_names: dict[tuple[str, str], int] = {}
    for index, item in enumerate(prepared):
        if item.id_given:
            alarm_id = item.fields["id"]
            if alarm_id in seen_ids:
                raise invalid(
                    f"specs[{index}].id", alarm_id, f"repeats specs[{seen_ids[alarm_id]}].id"
                )
            seen_ids[alarm_id] = index
        if item.fields["name"]:
            pair = (item.fields["key"], item.fields["name"])
            if pair in seen_names:
                raise invalid(
                    f"specs[{index}].name",
                    pair[1],
                    f"key={pair[0]!r} and this name repeat specs[{seen_names[pair]}]",
                )
            seen_names[pair] = index
    return seen_ids, seen_names
