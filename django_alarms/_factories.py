"""factory-boy factories for Alarm and Attempt; reach them through ``django_alarms.testing``."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.utils import timezone

from django_alarms.models import Alarm, Attempt
from django_alarms.types import Outcome, State


class AlarmFactory(factory.django.DjangoModelFactory):
    """A scheduled one-off alarm due now. The handler need not be registered (it is a row)."""

    class Meta:
        model = Alarm

    handler = "tests.noop"
    key = ""
    name = ""
    payload = factory.Dict({})
    state = State.SCHEDULED
    due_at = factory.LazyFunction(timezone.now)
    max_attempts = 5
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyFunction(timezone.now)

    class Params:
        failed = factory.Trait(
            state=State.FAILED,
            attempts=5,
            last_error="RuntimeError: boom",
            finished_at=factory.LazyFunction(timezone.now),
        )
        succeeded = factory.Trait(
            state=State.SUCCEEDED, attempts=1, finished_at=factory.LazyFunction(timezone.now)
        )


class AttemptFactory(factory.django.DjangoModelFactory):
    """An attempt of an alarm; ``number`` counts up per factory sequence."""

    class Meta:
        model = Attempt

    alarm = factory.SubFactory(AlarmFactory)
    number = factory.Sequence(lambda n: n + 1)
    outcome = Outcome.OK
    started_at = factory.LazyFunction(timezone.now)
    finished_at = factory.LazyAttribute(
        lambda attempt: attempt.started_at + timedelta(seconds=0.01)
    )
    handler = factory.SelfAttribute("alarm.handler")
    due_at = factory.SelfAttribute("alarm.due_at")
    worker = "test-worker"
