"""New alarms built in memory: the instances ``schedule_many`` writes in one statement.

The values are validated already (by the service layer), so an instance is made without the
cost of ``Model.__init__``; the engine of the database writes them
(:meth:`django_alarms.engines.base.Engine.insert_alarms`: a binary COPY on PostgreSQL, one
INSERT sent with ``executemany`` elsewhere), inside the caller's transaction.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models.base import ModelState

from django_alarms.arguments import payload_text, prepare_spec
from django_alarms.engines import get_engine
from django_alarms.exceptions import AlarmError, InvalidAlarm
from django_alarms.handlers import HandlerSpec, registry
from django_alarms.models import Alarm
from django_alarms.signals import alarm_scheduled, listened
from django_alarms.types import Spec, State

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


def any_validate_hook(items: Iterable[Spec]) -> bool:
    """Whether the handler of any spec has a validate() hook (an unknown handler is reported
    later, by the validation of its spec)."""
    checked: set[int] = set()
    for spec in items:
        if id(spec.handler) in checked:
            continue
        checked.add(id(spec.handler))
        try:
            if registry.resolve(spec.handler).validate is not None:
                return True
        except AlarmError:
            continue
    return False


class SharedPreparer:
    """Validates and builds the alarms of one ``schedule_many`` call whose specs give no id
    and no name, doing the work their arguments share once: specs made in a loop usually pass
    the very same handler, ``at`` (or ``delay``), key and limits; only the payload differs.

    Arguments are recognised by identity (the specs, so their arguments, live until the call
    ends), never by equality: ``True == 1``, and equal datetimes in different zones, must each
    still be validated and stored as given.
    """

    __slots__ = ("_known", "db", "now")

    def __init__(self, now: datetime, db: str) -> None:
        self.now = now
        self.db = db
        self._known: dict[tuple[int, ...], tuple[dict[str, Any], HandlerSpec]] = {}

    def __call__(self, index: int, spec: Spec, alarm_id: uuid.UUID) -> tuple[Alarm, str]:
        token = (
            id(spec.handler),
            id(spec.name),
            id(spec.id),
            id(spec.at),
            id(spec.delay),
            id(spec.key),
            id(spec.if_exists),
            id(spec.max_attempts),
            id(spec.timeout),
            id(spec.priority),
            id(spec.queue),
        )
        known = self._known.get(token)
        if known is None:
            prepared = prepare_spec(index, spec, self.now)  # every argument, in order
            base = with_defaults(prepared.fields)
            if len(self._known) >= 64:  # specs that share nothing: keep the memory bounded
                self._known.clear()
            self._known[token] = (base, registry.resolve(spec.handler))
            return build_from(base, self.db, alarm_id, spec.payload), prepared.payload_json
        base, handler_spec = known
        try:
            payload_json = payload_text(spec.payload, handler_spec)
        except InvalidAlarm as exc:
            raise type(exc)(f"specs[{index}]: {exc}", field=exc.field, value=exc.value) from None
        return build_from(base, self.db, alarm_id, spec.payload), payload_json


def stream_many(items: list[Spec], now: datetime, db: str) -> list[Alarm]:
    """schedule_many() on PostgreSQL when no spec needs a lookup: each spec is validated and
    built while the rows before it are already on their way to the server (one COPY). A bad
    spec aborts the COPY and rolls the transaction back: nothing is written."""
    new: list[Alarm] = []
    prepare = SharedPreparer(now, db)
    built: Iterator[tuple[Alarm, str]] = map(
        prepare, itertools.count(), items, (uuid.uuid4() for _ in items)
    )
    if any_validate_hook(items):
        # A validate() hook may query the database, which cannot be done on a connection in
        # the middle of a COPY: validate everything first.
        built = iter(list(built))

    def pairs() -> Iterator[tuple[Alarm, str | None]]:
        for alarm, payload_json in built:
            new.append(alarm)
            yield alarm, payload_json

    with transaction.atomic(using=db):
        get_engine(db).insert_stream(pairs())
    if listened(alarm_scheduled, Alarm):
        for alarm in new:
            alarm_scheduled.send(sender=Alarm, alarm=alarm, created=True)
    return new
