"""The list filters of the alarm, attempt and worker lists."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
)
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_alarms import clock, selectors
from django_alarms.admin.base import _uuid
from django_alarms.conf import tasks_backends
from django_alarms.handlers import registry
from django_alarms.models import Alarm
from django_alarms.types import State
from django_alarms.validation import DEFAULT_QUEUE

# -- filters ---------------------------------------------------------------------------------


class HandlerFilter(admin.SimpleListFilter):
    """Handlers from the registry (no ``SELECT DISTINCT`` over the table)."""

    title = _("handler")
    parameter_name = "handler"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        names = registry.names()
        current = self.value()
        if current and current not in names:  # a handler this process does not know (any more)
            names = [*names, current]
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(handler=value) if value else queryset


class QueueFilter(admin.SimpleListFilter):
    """Queues from the settings (``DEFAULT_QUEUE`` and the ``QUEUES`` of every Tasks backend of
    this package), not from a ``SELECT DISTINCT`` over the table; shown only when there is
    more than one."""

    title = _("queue")
    parameter_name = "queue"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        names = {DEFAULT_QUEUE}
        tasks: dict[str, Any] = getattr(settings, "TASKS", None) or {}
        for alias in tasks_backends():
            names.update(q for q in tasks[alias].get("QUEUES") or () if isinstance(q, str))
        current = self.value()
        if current:
            names.add(current)
        return [(name, name) for name in sorted(names)] if len(names) > 1 else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(queue=value) if value else queryset


class DueWindowFilter(admin.SimpleListFilter):
    """When scheduled alarms are due, relative to now (each an index range)."""

    title = _("due (scheduled alarms)")
    parameter_name = "due"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, Any]]:
        return [
            ("overdue", _("Overdue")),
            ("next_hour", _("In the next hour")),
            ("today", _("Today")),
            ("later", _("After today")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        now = clock.now()
        scheduled = queryset.filter(state=State.SCHEDULED)
        tomorrow = timezone.localtime(now).date() + timedelta(days=1)
        midnight = timezone.make_aware(datetime.combine(tomorrow, datetime.min.time()))
        if value == "overdue":
            return scheduled.filter(due_at__lt=now)
        if value == "next_hour":
            return scheduled.filter(due_at__gte=now, due_at__lt=now + timedelta(hours=1))
        if value == "today":
            return scheduled.filter(due_at__gte=now, due_at__lt=midnight)
        if value == "later":
            return scheduled.filter(due_at__gte=midnight)
        return queryset


class KindFilter(admin.SimpleListFilter):
    title = _("kind")
    parameter_name = "kind"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, Any]]:
        return [("one_off", _("One-off")), ("recurring", _("Recurring"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "one_off":
            return queryset.filter(recurrence__isnull=True)
        if self.value() == "recurring":
            return queryset.filter(recurrence__isnull=False)
        return queryset


class AlarmFilter(admin.SimpleListFilter):
    """The attempts of one alarm (``?alarm=<id>``, linked from the alarm's page)."""

    title = _("alarm")
    parameter_name = "alarm"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        value = self.value()
        if not value:
            return []
        alarm_id = _uuid(value)
        alarm = None
        if alarm_id is not None:
            alarm = Alarm.objects.filter(pk=alarm_id).only("id", "handler", "key", "name").first()
        return [(value, str(alarm) if alarm else value)]

    def has_output(self) -> bool:
        return bool(self.value())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        alarm_id = _uuid(value)
        return queryset.filter(alarm_id=alarm_id) if alarm_id else queryset.none()


class LivenessFilter(admin.SimpleListFilter):
    title = _("liveness")
    parameter_name = "alive"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, Any]]:
        return [("yes", _("Alive")), ("no", _("Dead"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        since = alive_since()
        if self.value() == "yes":
            return queryset.filter(heartbeat_at__gte=since)
        if self.value() == "no":
            return queryset.filter(heartbeat_at__lt=since)
        return queryset


def alive_since() -> datetime:
    """Workers that heartbeat since then are alive (:func:`selectors.alive_since`)."""
    return selectors.alive_since(clock.now())
