"""factory-boy factories for the tests: the ones ``django_alarms.testing`` ships, extended."""

from __future__ import annotations

import factory
from django.utils import timezone

from django_alarms.models import Alarm
from django_alarms.testing import AlarmFactory as BaseAlarmFactory
from django_alarms.testing import AttemptFactory

__all__ = ["AlarmFactory", "AttemptFactory"]


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
