"""Attempts and workers: read-only lists, and the inline of an alarm's latest attempts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    HttpRequest,
)
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_alarms import clock
from django_alarms.admin import lateness
from django_alarms.models import Attempt, Worker
from django_alarms.templatetags.alarms_admin import (
    duration,
    liveness_badge,
    moment,
    outcome_badge,
    relative_due,
    short_error,
    traceback_details,
)
from django_alarms.templatetags.alarms_admin import lateness as lateness_text

if TYPE_CHECKING:
    from datetime import datetime

    from django_stubs_ext import StrOrPromise

from django_alarms.admin.base import LATEST_ATTEMPTS, ReadOnlyAdmin, _uuid
from django_alarms.admin.filters import AlarmFilter, HandlerFilter, LivenessFilter, alive_since


class LatestAttemptsFormSet(BaseInlineFormSet):
    """The alarm's latest :data:`LATEST_ATTEMPTS` attempts (an inline cannot slice its
    queryset before the formset filters it by alarm, so the slice happens here)."""

    def get_queryset(self) -> Any:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[:LATEST_ATTEMPTS]
        return self._latest


class AttemptInline(admin.TabularInline):
    model = Attempt
    formset = LatestAttemptsFormSet
    fields = (
        "number_link",
        "outcome_display",
        "started",
        "lateness_display",
        "duration_display",
        "worker",
        "error_details",
    )
    readonly_fields = fields
    ordering = ("-number",)
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = _("attempts, newest first")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Attempt]:
        return super().get_queryset(request).order_by("-number")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("number"))
    def number_link(self, obj: Attempt) -> SafeString:
        url = reverse("admin:django_alarms_attempt_change", args=[obj.pk])
        return format_html('<a href="{}">#{}</a>', url, obj.number)

    @admin.display(description=_("outcome"))
    def outcome_display(self, obj: Attempt) -> SafeString:
        return outcome_badge(obj.outcome)

    @admin.display(description=_("started"))
    def started(self, obj: Attempt) -> str:
        return moment(obj.started_at)

    @admin.display(description=_("duration"))
    def duration_display(self, obj: Attempt) -> str:
        return duration(obj.duration)

    @admin.display(description=_("lateness"))
    def lateness_display(self, obj: Attempt) -> SafeString | str:
        return _lateness_cell(obj)

    @admin.display(description=_("error"))
    def error_details(self, obj: Attempt) -> SafeString | str:
        return traceback_details(obj.error, obj.traceback)


def _lateness_cell(obj: Attempt) -> SafeString | str:
    """The lateness of an attempt, with the time it was for in the tooltip."""
    seconds = lateness.of(obj)
    if seconds is None:
        return "-"
    return format_html(
        '<span title="{}">{}</span>',
        gettext("started %(late)s after %(due)s, the time it was for")
        % {"late": lateness_text(seconds), "due": moment(obj.due_at)}
        if seconds >= 0
        else gettext("started %(early)s before %(due)s, the time it was for")
        % {"early": lateness_text(-seconds), "due": moment(obj.due_at)},
        lateness_text(seconds),
    )


# -- attempts --------------------------------------------------------------------------------


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "outcome_display",
        "number_display",
        "alarm_link",
        "handler",
        "started",
        "lateness_display",
        "duration_display",
        "worker",
        "error_display",
    )
    list_display_links = ("number_display",)
    list_filter = ("outcome", HandlerFilter, ("started_at", admin.DateFieldListFilter), AlarmFilter)
    search_fields = ("error",)
    datetime_lookups = ("started_at__gte", "started_at__lt")
    search_help_text = _("An alarm id (its attempts), or part of an error message.")
    sortable_by = ("started",)
    list_per_page = 50
    fields = (
        "alarm_link",
        "number",
        "outcome_display",
        "handler",
        "due",
        "started",
        "lateness_display",
        "finished",
        "duration_display",
        "worker",
        "error",
        "traceback_display",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Attempt]:
        return super().get_queryset(request).select_related("alarm").only(*_ATTEMPT_LIST_FIELDS)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Attempt | None:
        # The list loads only what it shows; an attempt's page shows everything.
        queryset: QuerySet[Attempt] = admin.ModelAdmin.get_queryset(self, request)
        queryset = queryset.select_related("alarm")
        try:
            return queryset.get(pk=int(object_id))
        except (Attempt.DoesNotExist, ValueError):
            return None

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Attempt], search_term: str
    ) -> tuple[QuerySet[Attempt], bool]:
        alarm_id = _uuid(search_term)
        if alarm_id is not None:
            return queryset.filter(alarm_id=alarm_id), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description=_("outcome"), ordering="outcome")
    def outcome_display(self, obj: Attempt) -> SafeString:
        return outcome_badge(obj.outcome)

    @admin.display(description="#")
    def number_display(self, obj: Attempt) -> str:
        return f"#{obj.number}"

    @admin.display(description=_("alarm"))
    def alarm_link(self, obj: Attempt) -> SafeString:
        """The alarm by its key and name (the handler has its own column), whole in the
        tooltip."""
        alarm = obj.alarm
        url = reverse("admin:django_alarms_alarm_change", args=[quote(obj.alarm_id)])
        label = f"{alarm.key}/{alarm.name}" if alarm.name else (alarm.key or str(alarm.id)[:8])
        return format_html(
            '<a class="alarms-label" href="{}" title="{}">{}</a>', url, str(alarm), label
        )

    @admin.display(description=_("due"))
    def due(self, obj: Attempt) -> str:
        return moment(obj.due_at)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: Attempt) -> SafeString:
        return _breakable_moment(obj.started_at)

    @admin.display(description=_("finished"))
    def finished(self, obj: Attempt) -> str:
        return moment(obj.finished_at)

    @admin.display(description=_("duration"))
    def duration_display(self, obj: Attempt) -> str:
        return duration(obj.duration)

    @admin.display(description=_("lateness"))
    def lateness_display(self, obj: Attempt) -> SafeString | str:
        return _lateness_cell(obj)

    @admin.display(description=_("error"))
    def error_display(self, obj: Attempt) -> SafeString | str:
        return short_error(obj.error, 60)

    @admin.display(description=_("traceback"))
    def traceback_display(self, obj: Attempt) -> SafeString | str:
        if not obj.traceback:
            return "-"
        return format_html('<pre class="alarms-traceback-text">{}</pre>', obj.traceback)


_ATTEMPT_LIST_FIELDS = (
    "id",
    "alarm",
    "number",
    "outcome",
    "started_at",
    "finished_at",
    "handler",
    "due_at",
    "error",
    "worker",
    "alarm__id",
    "alarm__handler",
    "alarm__key",
    "alarm__name",
)


# -- workers ---------------------------------------------------------------------------------


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "hostname",
        "pid",
        "started",
        "heartbeat",
        "liveness",
        "load",
        "executor",
        "stopping_display",
        "version",
    )
    list_filter = (LivenessFilter, "stopping")
    search_fields = ("name", "hostname")
    ordering = ("-heartbeat_at",)
    fields = (
        "id",
        "name",
        "hostname",
        "pid",
        "executor",
        "concurrency",
        "served_handlers",
        "served_queues",
        "started",
        "heartbeat",
        "liveness",
        "in_flight",
        "stopping",
        "version",
    )
    readonly_fields = fields

    @admin.display(description=_("handlers"))
    def served_handlers(self, obj: Worker) -> str:
        return _served(obj.handlers, _("all registered"))

    @admin.display(description=_("queues"))
    def served_queues(self, obj: Worker) -> str:
        return _served(obj.queues, _("all"))

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: Worker) -> SafeString:
        return _breakable_moment(obj.started_at)

    @admin.display(description=_("last heartbeat"), ordering="heartbeat_at")
    def heartbeat(self, obj: Worker) -> SafeString:
        return format_html(
            "{}<br><span class='alarms-relative'>{}</span>",
            _breakable_moment(obj.heartbeat_at),
            relative_due(obj.heartbeat_at, "", clock.now()),
        )

    @admin.display(description=_("in flight"))
    def load(self, obj: Worker) -> str:
        return gettext("%(in_flight)d of %(concurrency)d") % {
            "in_flight": obj.in_flight,
            "concurrency": obj.concurrency,
        }

    @admin.display(description=_("stopping"))
    def stopping_display(self, obj: Worker) -> str:
        return gettext("stopping") if obj.stopping else "-"

    @admin.display(description=_("alive"))
    def liveness(self, obj: Worker) -> SafeString:
        return liveness_badge(obj.heartbeat_at >= alive_since())


__all__ = ["AttemptAdmin", "AttemptInline", "WorkerAdmin"]


def _served(names: object, everything: StrOrPromise) -> str:
    """A worker's ``--handlers`` or ``--queues``, or ``everything`` when it was started
    without (it then serves every handler registered in its process, every queue)."""
    if isinstance(names, list) and names:
        return ", ".join(str(name) for name in names)
    return str(everything)


def _breakable_moment(value: datetime | None) -> SafeString:
    """:func:`moment` that a narrow column breaks between the date and the time only, never
    between the time and its zone."""
    day, _space, time = moment(value).partition(" ")
    return format_html(
        '<span class="alarms-nowrap">{}</span> <span class="alarms-nowrap">{}</span>', day, time
    )
