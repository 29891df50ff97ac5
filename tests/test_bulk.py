"""Writing many alarms at once: what schedule_many stores is exactly what was given."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from django_alarms import alarms
from django_alarms.bulk import new_ids
from django_alarms.models import Alarm

pytestmark = pytest.mark.django_db

AWKWARD = ["100%", "%s", "tab\there", "new\nline", "back\\slash", "cr\rhere", "{}", "é ☃"]


def test_new_ids_are_random_version_4_uuids():
    ids = new_ids(500)
    assert len(set(ids)) == 500
    for value in ids:
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value


def test_values_shared_by_every_row_and_values_that_vary_round_trip():
    due = timezone.now() + timedelta(hours=1)
    shared = alarms.schedule_many(
        [alarms.Spec("probe", {"text": text}, key="100% {shared}\t", at=due) for text in AWKWARD]
    )
    varying = alarms.schedule_many(
        [
            alarms.Spec(
                "probe",
                {"text": text, "n": n},
                key=text,
                name=f"n{n}",
                at=due + timedelta(seconds=n),
                timeout=n + 1,
                max_attempts=n + 1,
            )
            for n, text in enumerate(AWKWARD)
        ]
    )
    for made in shared + varying:
        stored = Alarm.objects.get(pk=made.pk)
        assert (stored.key, stored.name, stored.payload) == (made.key, made.name, made.payload)
        assert (stored.due_at, stored.timeout, stored.max_attempts) == (
            made.due_at,
            made.timeout,
            made.max_attempts,
        )
        assert stored.state == "scheduled"
        assert stored.attempts == 0
    assert [a.key for a in varying] == AWKWARD
    assert {a.key for a in shared} == {"100% {shared}\t"}


def test_one_alarm_alone_is_written_too():
    (made,) = alarms.schedule_many([alarms.Spec("probe", {"only": True}, key="50%")])
    assert Alarm.objects.get(pk=made.pk).key == "50%"
