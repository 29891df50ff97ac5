"""New alarms built in memory: the instances ``schedule_many`` writes in one statement.

The values are validated already (by the service layer), so an instance is made without the
cost of ``Model.__init__``; the engine of the database writes them
(:meth:`django_alarms.engines.base.Engine.insert_alarms`: a binary COPY on PostgreSQL, one
INSERT sent with ``executemany`` elsewhere), inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

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
