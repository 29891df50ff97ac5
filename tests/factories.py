"""factory-boy factories for the tests: the ones ``django_alarms.testing`` ships, extended."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import factory
from django.utils import timezone

from django_alarms.claims import Claim
from django_alarms.engines import get_engine
from django_alarms.models import Alarm
from django_alarms.testing import AlarmFactory as BaseAlarmFactory
from django_alarms.testing import AttemptFactory

__all__ = ["AlarmFactory", "AttemptFactory", "a_claim", "claim", "extend", "release"]


def a_claim(**overrides: Any) -> Claim:
    """A claimed first attempt of a ``probe`` alarm due now, held for a minute, that is in no
    table (for pieces driven without the database)."""
    now = timezone.now()
    values: dict[str, Any] = {
        "alarm_id": uuid.uuid4(),
        "handler": "probe",
        "key": "",
        "name": "",
        "payload": {},
        "due_at": now,
        "number": 1,
        "budget_start": 0,
        "max_attempts": 3,
        "timeout": None,
        "created_at": now,
        "recurrence": None,
        "occurrence_at": None,
        "last_error": "",
        "worker_id": uuid.uuid4(),
        "lease_until": now + timedelta(minutes=1),
    }
    values.update(overrides)
    return Claim(**values)


class AlarmFactory(BaseAlarmFactory):
    """``django_alarms.testing.AlarmFactory`` with the remaining end and pause states."""

    class Meta:
        model = Alarm

    class Params:
        cancelled = factory.Trait(
            state=Alarm.State.CANCELLED,
            cancel_reason="no longer needed",
            finished_at=factory.LazyFunction(timezone.now),
        )
        paused = factory.Trait(state=Alarm.State.PAUSED)


def store_payload_text(alarm_id: uuid.UUID, text: str) -> None:
    """Write ``text`` as the stored payload of an alarm, around the ORM and the JSON check, as
    a migration or a hand-written UPDATE could. SQLite and MariaDB keep JSON as checked text,
    and let a session turn the check off; PostgreSQL's ``jsonb`` cannot hold anything else."""
    from django.db import connection

    switch = {
        "sqlite": ("PRAGMA ignore_check_constraints = ON", "PRAGMA ignore_check_constraints = OFF"),
        "mysql": (
            "SET SESSION check_constraint_checks = 0",
            "SET SESSION check_constraint_checks = 1",
        ),
    }[connection.vendor]
    table = connection.ops.quote_name(Alarm._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(switch[0])
        try:
            cursor.execute(f"UPDATE {table} SET payload = %s WHERE id = %s", [text, alarm_id.hex])
        finally:
            cursor.execute(switch[1])


def claim(*, db: str = "default", **kwargs: Any) -> list[Claim]:
    """``Engine.claim`` of database ``db``."""
    return get_engine(db).claim(**kwargs)


def extend(*, db: str = "default", **kwargs: Any) -> dict[uuid.UUID, int]:
    """``Engine.extend`` of database ``db``."""
    return get_engine(db).extend(**kwargs)


def release(*, db: str = "default", **kwargs: Any) -> int:
    """``Engine.release`` of database ``db``."""
    return get_engine(db).release(**kwargs)
