"""The Django admin of django-alarms: read-only history, actions through the service layer.

Nothing here writes an alarm: every action fetches rows and calls :mod:`django_alarms.alarms`
(retry, run_now, cancel, reschedule), checks its own permission server-side (``retry_alarm``,
``run_alarm``, ``cancel_alarm``, ``reschedule_alarm``), skips the rows it does not apply to and
says why, and writes a ``LogEntry`` per changed alarm. Alarms, attempts and workers can be
looked at but never added, edited or deleted here: the history is evidence.

The lists stay fast on millions of rows: no per-row queries, counts that stop at a cap (see
:class:`CappedPaginator`), filters that list handlers from the registry instead of the table,
and a date hierarchy answered by index probes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django.contrib import admin, messages
from django.contrib.admin.filters import FieldListFilter
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path, quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    QueryDict,
)
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.text import smart_split
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_alarms import admin_views, alarms, clock, selectors, validation
from django_alarms.conf import alarm_settings
from django_alarms.exceptions import AlarmError
from django_alarms.handlers import registry
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.templatetags.alarms_admin import (
    due_cell,
    duration,
    liveness_badge,
    moment,
    outcome_badge,
    pretty_json,
    relative_due,
    short_error,
    state_badge,
    traceback_details,
)
from django_alarms.types import ACTIVE_STATES, State

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: The most alarms one action changes; select fewer (filter the list) to act on more.
MAX_ACTION_ROWS = 1000
#: Attempts shown on an alarm's page; the rest are one click away in the attempt list.
LATEST_ATTEMPTS = 20
#: The most words a search looks for (each word is a condition on every searched column).
MAX_SEARCH_TERMS = 20
#: Parameters of a list that are not filters (search, ordering, page, show all, facets); an
#: alarm's page keeps them, with the list's filters, in its links back to the list.
LIST_PARAMS = frozenset({"q", "o", "p", "all", "_facets"})

ADMIN_CSS = {"all": ["django_alarms/admin.css"]}
#: An occurrence with its day of the week, in the schedule's own time zone.
WEEKDAY = "%a %Y-%m-%d %H:%M:%S %Z"
MISFIRE = {
    "once": _("one catch-up delivery for the missed occurrences (misfire=once)"),
    "skip": _("missed occurrences are skipped (misfire=skip)"),
    "all": _("each missed occurrence is delivered (misfire=all)"),
}


# -- the paginator ---------------------------------------------------------------------------


class CappedPaginator(Paginator):
    """A paginator that never counts a whole big table.

    Filtered lists are counted up to :attr:`cap` rows (``capped`` tells when there are more);
    on PostgreSQL the unfiltered list shows the planner's estimate of the table's size
    (``estimate``). Either way pages stop at the cap: narrow the list with filters to go
    further, which is also what keeps deep ``OFFSET`` scans away.
    """

    cap = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capped = False
        self.estimate: int | None = None

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        counted = selectors.capped_count(queryset, self.cap)
        self.capped = counted.capped
        if counted.capped and not queryset.query.where:
            estimate = selectors.estimated_row_count(queryset.model, using=queryset.db)
            if estimate is not None and estimate > self.cap:
                self.estimate = estimate
        return counted.value


# -- filters ---------------------------------------------------------------------------------


class HandlerFilter(admin.SimpleListFilter):
    """Handlers from the registry (no ``SELECT DISTINCT`` over the table)."""

    title = _("handler")
    parameter_name = "handler"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = registry.names()
        current = self.value()
        if current and current not in names:  # a handler this process does not know (any more)
            names = [*names, current]
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(handler=value) if value else queryset


class DueWindowFilter(admin.SimpleListFilter):
    """When scheduled alarms are due, relative to now (each an index range)."""

    title = _("due (scheduled alarms)")
    parameter_name = "due"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
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

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
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

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
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

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("Alive")), ("no", _("Dead"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        since = alive_since()
        if self.value() == "yes":
            return queryset.filter(heartbeat_at__gte=since)
        if self.value() == "no":
            return queryset.filter(heartbeat_at__lt=since)
        return queryset


def alive_since() -> datetime:
    """Workers that heartbeat since then are alive: three heartbeat intervals ago."""
    return clock.now() - 3 * alarm_settings.HEARTBEAT_INTERVAL


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        return None


def _hierarchy_params(field: str) -> tuple[str, str, str]:
    return f"{field}__year", f"{field}__month", f"{field}__day"


def _instant(field: Any, value: str) -> str:
    """A filter's instant, checked (:func:`validation.storable`) and written in UTC, so that no
    database sees an offset it refuses (PostgreSQL stops at 15:59) or a year past 9999."""
    try:
        moment = field.to_python(value)
        if moment is None:
            raise IncorrectLookupParameters(f"no time in {field.name}")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        validation.storable(field.name, moment)
    except (ValueError, OverflowError, ValidationError) as error:
        raise IncorrectLookupParameters(error) from error
    return str(moment.astimezone(dt_timezone.utc).isoformat())


def _check_hierarchy(field: str, params: dict[str, list[str]]) -> None:
    """Refuse a date hierarchy step (year, month, day) whose period Django cannot compute or
    an alarm cannot fall in, before Django builds it (it computes the period's end unguarded)."""
    year_param, month_param, day_param = _hierarchy_params(field)
    if year_param not in params:
        if month_param in params or day_param in params:
            raise IncorrectLookupParameters("a month or day without a year")
        return
    try:
        year = int(params[year_param][-1])
        month = int(params[month_param][-1]) if month_param in params else None
        day = int(params[day_param][-1]) if day_param in params else None
        start = datetime(year, month or 1, day or 1)
        if day is not None:
            end = start + timedelta(days=1)
        elif month is not None:
            end = (start + timedelta(days=32)).replace(day=1)
        else:
            end = start.replace(year=year + 1)
        for moment in (start, end):
            validation.storable(
                field, timezone.make_aware(moment) if timezone.is_naive(moment) else moment
            )
    except (ValueError, OverflowError) as error:
        raise IncorrectLookupParameters(error) from error


# -- the operations behind the actions and the buttons ---------------------------------------


@dataclass(frozen=True)
class Operation:
    """One change an operator can make, with its permission, its eligible states and words."""

    name: str
    permission: str
    eligible: tuple[str, ...]
    call: Callable[..., Alarm | int]
    done: Callable[[int], str]
    refused: StrOrPromise
    log: Callable[[Alarm, dict[str, Any]], str]


def _log_retry(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Retried now from the admin (was %(state)s).") % {"state": before.state}


def _log_run(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Made due now from the admin (was due at %(due)s).") % {
        "due": moment(before.due_at)
    }


def _log_cancel(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Cancelled from the admin (was %(state)s).") % {"state": before.state}


def _log_reschedule(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Rescheduled from the admin to %(new)s (was %(state)s, due at %(old)s).") % {
        "new": moment(options["at"]),
        "state": before.state,
        "old": moment(before.due_at),
    }


def _cancel(alarm: Alarm, *, request: HttpRequest) -> int:
    return alarms.cancel(alarm, reason=f"cancelled in the admin by {request.user}"[:255])


OPERATIONS = {
    "retry": Operation(
        name="retry",
        permission="retry",
        eligible=tuple(alarms.RETRYABLE),
        call=lambda alarm, **options: alarms.retry(alarm),
        done=lambda count: ngettext(
            "Retried %(count)d alarm: it is scheduled again, due now.",
            "Retried %(count)d alarms: they are scheduled again, due now.",
            count,
        ),
        refused=_("only failed or cancelled alarms can be retried"),
        log=_log_retry,
    ),
    "run": Operation(
        name="run",
        permission="run",
        eligible=tuple(alarms.RUNNABLE),
        call=lambda alarm, **options: alarms.run_now(alarm),
        done=lambda count: ngettext(
            "Made %(count)d alarm due now: a worker delivers it at once.",
            "Made %(count)d alarms due now: workers deliver them at once.",
            count,
        ),
        refused=_("only scheduled alarms can be run now"),
        log=_log_run,
    ),
    "cancel": Operation(
        name="cancel",
        permission="cancel",
        eligible=tuple(alarms.CANCELLABLE),
        call=lambda alarm, request, **options: _cancel(alarm, request=request),
        done=lambda count: ngettext(
            "Cancelled %(count)d alarm.", "Cancelled %(count)d alarms.", count
        ),
        refused=_("only scheduled, failed or paused alarms can be cancelled"),
        log=_log_cancel,
    ),
    "reschedule": Operation(
        name="reschedule",
        permission="reschedule",
        eligible=tuple(alarms.RESCHEDULABLE),
        call=lambda alarm, at, **options: alarms.reschedule(alarm, at=at),
        done=lambda count: ngettext(
            "Rescheduled %(count)d alarm.", "Rescheduled %(count)d alarms.", count
        ),
        refused=_("only scheduled, paused, failed or cancelled alarms can be rescheduled"),
        log=_log_reschedule,
    ),
}


# -- read-only admins ------------------------------------------------------------------------


class CheckedChangeList(ChangeList):
    """A list whose filter values are checked before any reaches the database: a value no
    row can hold (a NUL character, a time outside what an alarm can carry, a date hierarchy
    year like 10000) is reported as a wrong filter (Django's ``?e=1``), never a server error."""

    def get_filters_params(self, params: Any = None) -> Any:
        lookup_params = super().get_filters_params(params)
        model_admin: Any = self.model_admin
        return model_admin.checked_lookup_params(lookup_params)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Look, never touch: no add, no edit, no delete (changes go through the actions).

    A list answers only the query parameters its own filters, date hierarchy and links use
    (:meth:`allowed_lookups`): any other lookup, such as ``?payload__password__startswith=h``
    on the alarms, is refused (400) whatever its value, so that nothing masked on a page can be
    learnt by asking the list yes-or-no questions.
    """

    show_facets = admin.ShowFacets.NEVER
    show_full_result_count = False
    paginator = CappedPaginator
    #: Lookups that are not a filter of the sidebar but that the app's own links use.
    link_lookups: tuple[str, ...] = ()
    #: Lookups whose values are instants (checked, and sent to the database in UTC).
    datetime_lookups: tuple[str, ...] = ()

    class Media:
        css = ADMIN_CSS

    # -- what a list may be asked -----------------------------------------------------------

    def allowed_lookups(self, request: HttpRequest | None) -> set[str]:
        """The query parameters of the list's filters, date hierarchy and links."""
        names = set(self.link_lookups)
        if self.date_hierarchy:
            names.update(_hierarchy_params(self.date_hierarchy))
        list_filter: Any = (
            self.get_list_filter(request) if request is not None else self.list_filter
        )
        item: Any
        field_path: Any
        filter_class: Any
        for item in list_filter:
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                names.add(str(item.parameter_name))
                continue
            if isinstance(item, (list, tuple)):
                field_path, filter_class = item
            else:
                field_path, filter_class = item, FieldListFilter.create
            field = get_fields_from_path(self.model, field_path)[-1]
            spec = filter_class(field, request, {}, self.model, self, field_path=field_path)
            names.update(spec.expected_parameters())
        return names

    # Django 5.2 passes ``request`` as an optional third argument, Django 6 always passes it.
    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup in self.allowed_lookups(request)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CheckedChangeList

    def checked_lookup_params(self, params: dict[str, list[str]]) -> dict[str, list[str]]:
        """``params`` with instants in UTC; :class:`IncorrectLookupParameters` for a value no
        row can match and the database may refuse to compare."""
        for values in params.values():
            if any("\x00" in value for value in values):  # PostgreSQL refuses NUL in text
                raise IncorrectLookupParameters("a NUL character in a filter")
        for lookup in self.datetime_lookups:
            if lookup in params:
                field = get_fields_from_path(self.model, lookup.split("__")[0])[-1]
                params[lookup] = [_instant(field, value) for value in params[lookup]]
        if self.date_hierarchy:
            _check_hierarchy(self.date_hierarchy, params)
        return params

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if len(list(smart_split(search_term))) > MAX_SEARCH_TERMS:
            # Each word is a condition per column: thousands of them overflow SQLite's parser.
            raise IncorrectLookupParameters("too many words in the search")
        return super().get_search_results(request, queryset, search_term)

    def get_preserved_filters(self, request: HttpRequest) -> str:
        """The list's parameters kept in the links of an alarm's page, without the ones the
        list would refuse (they are not echoed back, whatever they ask)."""
        preserved = super().get_preserved_filters(request)
        if not preserved:
            return preserved
        filters = QueryDict(QueryDict(preserved).get("_changelist_filters", ""), mutable=True)
        allowed = self.allowed_lookups(request) | LIST_PARAMS
        for key in list(filters):
            if key not in allowed:
                del filters[key]
        return urlencode({"_changelist_filters": filters.urlencode()}) if filters else ""

    # Django 6.1 passes ``action_location`` too (5.2 does not): whatever it passes is passed on.
    def response_action(  # type: ignore[override]
        self, request: HttpRequest, queryset: QuerySet[Any], **kwargs: Any
    ) -> Any:
        """Run the action chosen on the list, once the selected ids are ids: a value that is
        not (typed or forged, such as ``not-a-uuid``) is reported, and nothing is done."""
        if not request.POST.get("select_across"):
            field = self.model._meta.pk
            try:
                for value in request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME):
                    if "\x00" in value:
                        raise ValidationError("a NUL character")
                    field.to_python(value)
            except ValidationError:
                self.message_user(
                    request,
                    gettext("The selection holds a value that is not an id: nothing was done."),
                    messages.ERROR,
                )
                return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset, **kwargs)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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

    @admin.display(description=_("error"))
    def error_details(self, obj: Attempt) -> SafeString | str:
        return traceback_details(obj.error, obj.traceback)


@admin.register(Alarm)
class AlarmAdmin(ReadOnlyAdmin):
    list_display = (
        "state_display",
        "handler",
        "key_display",
        "name_display",
        "due",
        "attempts_display",
        "last_error_display",
        "kind",
    )
    list_display_links = ("handler",)
    list_filter = ("state", HandlerFilter, DueWindowFilter, KindFilter)
    search_fields = ("key", "name")
    search_help_text = _("An alarm id (exact match), or part of a key or name.")
    date_hierarchy = "due_at"
    link_lookups = ("due_at__gte", "due_at__lt")  # the overview's hours
    datetime_lookups = ("due_at__gte", "due_at__lt")
    sortable_by = ("due",)
    list_per_page = 50
    actions = ("retry_now", "run_now", "cancel_alarms", "reschedule_alarms")
    inlines = (AttemptInline,)
    readonly_fields = (
        "id",
        "state_display",
        "handler",
        "key",
        "name",
        "due_detail",
        "occurrence",
        "created",
        "updated",
        "finished",
        "attempts_detail",
        "timeout_display",
        "last_error_detail",
        "claim",
        "cancel_reason",
        "payload_display",
        "schedule",
        "upcoming",
        "schedule_bounds",
    )

    # -- lists ------------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alarm]:
        return super().get_queryset(request).defer("payload")

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        """What is waiting comes soonest first; everything else latest first."""
        waiting = request.GET.get("state__exact") in (State.SCHEDULED, State.PAUSED)
        if waiting or request.GET.get("due"):
            return ("due_at",)
        return ("-due_at",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Alarm], search_term: str
    ) -> tuple[QuerySet[Alarm], bool]:
        alarm_id = _uuid(search_term)
        if alarm_id is not None:
            return queryset.filter(pk=alarm_id), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description=_("state"))
    def state_display(self, obj: Alarm) -> SafeString:
        return state_badge(obj.state)

    @admin.display(description=_("key"))
    def key_display(self, obj: Alarm) -> SafeString | str:
        return _label(obj.key)

    @admin.display(description=_("name"))
    def name_display(self, obj: Alarm) -> SafeString | str:
        return _label(obj.name)

    @admin.display(description=_("due"), ordering="due_at")
    def due(self, obj: Alarm) -> SafeString:
        return due_cell(obj.due_at, obj.state, self._now)

    @admin.display(description=_("attempts"))
    def attempts_display(self, obj: Alarm) -> str:
        return f"{obj.budget_attempts}/{obj.max_attempts}"

    @admin.display(description=_("last error"))
    def last_error_display(self, obj: Alarm) -> SafeString | str:
        return short_error(obj.last_error, 60)

    @admin.display(description=_("kind"))
    def kind(self, obj: Alarm) -> str:
        return gettext("recurring") if obj.is_recurring else gettext("one-off")

    @property
    def _now(self) -> datetime:
        return clock.now()

    # -- the alarm's page -------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Alarm | None = None) -> Any:
        times = ["due_detail", "created", "updated", "finished"]
        if obj is not None and obj.is_recurring:
            times.insert(1, "occurrence")
        attempts = ["attempts_detail", "timeout_display", "last_error_detail"]
        if obj is not None and obj.state == State.RUNNING:
            attempts.append("claim")
        if obj is not None and obj.cancel_reason:
            attempts.append("cancel_reason")
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, {"fields": ("id", "state_display", "handler", "key", "name")}),
            (_("Time"), {"fields": times}),
            (_("Attempts"), {"fields": attempts}),
            (_("Payload"), {"fields": ("payload_display",)}),
        ]
        if obj is not None and obj.is_recurring:
            fieldsets.append(
                (_("Schedule"), {"fields": ("schedule", "upcoming", "schedule_bounds")})
            )
        return fieldsets

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        alarm_id = _uuid(object_id)
        if alarm_id is None:
            return None
        # The list defers the payload; the alarm's page shows it.
        return self.get_queryset(request).defer(None).filter(pk=alarm_id).first()

    @admin.display(description=_("due"))
    def due_detail(self, obj: Alarm) -> SafeString:
        return format_html(
            "{} &nbsp;<span class='alarms-relative'>({})</span>",
            moment(obj.due_at),
            relative_due(obj.due_at, obj.state, self._now),
        )

    @admin.display(description=_("occurrence"))
    def occurrence(self, obj: Alarm) -> str:
        return moment(obj.occurrence_at) if obj.occurrence_at else "-"

    @admin.display(description=_("created"))
    def created(self, obj: Alarm) -> str:
        return moment(obj.created_at)

    @admin.display(description=_("updated"))
    def updated(self, obj: Alarm) -> str:
        return moment(obj.updated_at)

    @admin.display(description=_("finished"))
    def finished(self, obj: Alarm) -> str:
        return moment(obj.finished_at) if obj.finished_at else "-"

    @admin.display(description=_("attempts"))
    def attempts_detail(self, obj: Alarm) -> str:
        text = gettext("%(used)d of %(max)d in the current budget") % {
            "used": obj.budget_attempts,
            "max": obj.max_attempts,
        }
        if obj.budget_start:
            text += " " + gettext("(%(total)d in all)") % {"total": obj.attempts}
        return text

    @admin.display(description=_("timeout"))
    def timeout_display(self, obj: Alarm) -> str:
        if obj.timeout is None:
            return gettext("the handler's")
        return gettext("%(seconds)g s") % {"seconds": obj.timeout}

    @admin.display(description=_("last error"))
    def last_error_detail(self, obj: Alarm) -> SafeString | str:
        if not obj.last_error:
            return "-"
        return format_html('<pre class="alarms-error-text">{}</pre>', obj.last_error)

    @admin.display(description=_("claimed"))
    def claim(self, obj: Alarm) -> str:
        return gettext("by worker %(worker)s at %(at)s, lease until %(lease)s") % {
            "worker": obj.claimed_by or "-",
            "at": moment(obj.claimed_at),
            "lease": moment(obj.lease_until),
        }

    @admin.display(description=_("payload"))
    def payload_display(self, obj: Alarm) -> SafeString:
        return pretty_json(obj.payload)

    @admin.display(description=_("schedule"))
    def schedule(self, obj: Alarm) -> str:
        recurrence = _recurrence(obj)
        return recurrence.describe() if recurrence else "-"

    @admin.display(description=_("next occurrences"))
    def upcoming(self, obj: Alarm) -> SafeString | str:
        recurrence = _recurrence(obj)
        if recurrence is None:
            return "-"
        zone = ZoneInfo(recurrence.timezone)
        pending = obj.occurrence_at if obj.state in ACTIVE_STATES else None
        if pending is not None:
            occurrences = [pending, *recurrence.upcoming(pending, 4)]
        else:
            occurrences = recurrence.upcoming(self._now, 5)
        if not occurrences:
            return gettext("none: the schedule has ended")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td></tr>",
            (
                (when.astimezone(zone).strftime(WEEKDAY), moment(when, dt_timezone.utc))
                for when in occurrences
            ),
        )
        note = ""
        if pending is None:
            note = gettext("The alarm is %(state)s: these occurrences will not be delivered.") % {
                "state": obj.state
            }
        return format_html(
            '<table class="alarms-upcoming"><thead><tr><th>{}</th><th>UTC</th></tr></thead>'
            "<tbody>{}</tbody></table>{}",
            recurrence.timezone,
            rows,
            format_html('<p class="help">{}</p>', note) if note else "",
        )

    @admin.display(description=_("bounds"))
    def schedule_bounds(self, obj: Alarm) -> str:
        recurrence = _recurrence(obj)
        if recurrence is None:
            return "-"
        if recurrence.end_at is None:
            bounds = gettext("from %(start)s, without end") % {"start": moment(recurrence.start_at)}
        else:
            bounds = gettext("from %(start)s until %(end)s") % {
                "start": moment(recurrence.start_at),
                "end": moment(recurrence.end_at),
            }
        return gettext("%(bounds)s; after downtime: %(misfire)s") % {
            "bounds": bounds,
            "misfire": MISFIRE.get(recurrence.misfire, recurrence.misfire),
        }

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        alarm = self.get_object(request, unquote(object_id))
        if alarm is not None and self.has_view_permission(request, alarm):
            context.update(self._buttons(request, alarm))
            if request.user.has_perm("django_alarms.view_attempt"):
                total = Attempt.objects.filter(alarm_id=alarm.pk).count()
                context["attempts_total"] = total
                context["attempts_shown"] = min(total, LATEST_ATTEMPTS)
                context["attempts_url"] = (
                    reverse("admin:django_alarms_attempt_changelist") + f"?alarm={alarm.pk}"
                )
        return super().change_view(request, object_id, form_url, context)

    def _buttons(self, request: HttpRequest, alarm: Alarm) -> dict[str, Any]:
        buttons = []
        labels = {
            "retry": _("Retry now"),
            "run": _("Run now"),
            "cancel": _("Cancel"),
            "reschedule": _("Reschedule…"),
        }
        for name, operation in OPERATIONS.items():
            if alarm.state not in operation.eligible or not self._allowed(request, operation):
                continue
            buttons.append(
                {
                    "name": name,
                    "label": labels[name],
                    "url": reverse(f"admin:django_alarms_alarm_{name}", args=[quote(alarm.pk)]),
                    "form": name != "reschedule",
                }
            )
        return {"alarm_buttons": buttons}

    # -- permissions ------------------------------------------------------------------------

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_alarms.retry_alarm")

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_alarms.run_alarm")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_alarms.cancel_alarm")

    def has_reschedule_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_alarms.reschedule_alarm")

    def _allowed(self, request: HttpRequest, operation: Operation) -> bool:
        checker = getattr(self, f"has_{operation.permission}_permission")
        return self.has_view_permission(request) and bool(checker(request))

    # -- actions ----------------------------------------------------------------------------

    @admin.action(description=_("Retry selected alarms now"), permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> None:
        rows = self._selection(request, queryset)
        if rows is not None:
            self.apply(request, rows, OPERATIONS["retry"])

    @admin.action(description=_("Run selected alarms now"), permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> None:
        rows = self._selection(request, queryset)
        if rows is not None:
            self.apply(request, rows, OPERATIONS["run"])

    @admin.action(description=_("Cancel selected alarms"), permissions=["cancel"])
    def cancel_alarms(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> None:
        rows = self._selection(request, queryset)
        if rows is not None:
            self.apply(request, rows, OPERATIONS["cancel"])

    @admin.action(description=_("Reschedule selected alarms…"), permissions=["reschedule"])
    def reschedule_alarms(
        self, request: HttpRequest, queryset: QuerySet[Alarm]
    ) -> HttpResponse | None:
        rows = self._selection(request, queryset)
        if rows is None:
            return None
        return self._reschedule(request, rows, single=False)

    def _selection(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> list[Alarm] | None:
        """The selected alarms, or ``None`` (and a message) when they are too many."""
        rows = list(
            queryset.order_by().only("id", "state", "due_at", "handler", "key", "name")[
                : MAX_ACTION_ROWS + 1
            ]
        )
        if len(rows) > MAX_ACTION_ROWS:
            self.message_user(
                request,
                gettext(
                    "Nothing was changed: more than %(max)d alarms are selected. Narrow the "
                    "list with filters and act on at most %(max)d alarms at a time."
                )
                % {"max": MAX_ACTION_ROWS},
                messages.ERROR,
            )
            return None
        return rows

    def apply(
        self, request: HttpRequest, rows: Sequence[Alarm], operation: Operation, **options: Any
    ) -> int:
        """Call the operation's service for each eligible row, log each change, and tell the
        operator what was done and what was skipped, and why. Return how many changed."""
        changed = 0
        ineligible: Counter[str] = Counter()
        refusals: list[str] = []
        for alarm in rows:
            if alarm.state not in operation.eligible:
                ineligible[alarm.state] += 1
                continue
            try:
                operation.call(alarm, request=request, **options)
            except AlarmError as error:  # changed meanwhile, or a (key, name) clash
                refusals.append(str(error))
                continue
            self.log_change(request, alarm, operation.log(alarm, options))
            changed += 1
        if changed:
            self.message_user(
                request, operation.done(changed) % {"count": changed}, messages.SUCCESS
            )
        skipped = sum(ineligible.values())
        if skipped:
            states = ", ".join(
                f"{count} {State(state).label}" for state, count in sorted(ineligible.items())
            )
            self.message_user(
                request,
                ngettext(
                    "Skipped %(count)d alarm (%(states)s): %(reason)s.",
                    "Skipped %(count)d alarms (%(states)s): %(reason)s.",
                    skipped,
                )
                % {"count": skipped, "states": states, "reason": operation.refused},
                messages.WARNING,
            )
        if refusals:
            shown = "; ".join(refusals[:3]) + ("; …" if len(refusals) > 3 else "")
            self.message_user(
                request,
                ngettext(
                    "Skipped %(count)d alarm that could not be changed: %(errors)s",
                    "Skipped %(count)d alarms that could not be changed: %(errors)s",
                    len(refusals),
                )
                % {"count": len(refusals), "errors": shown},
                messages.WARNING,
            )
        return changed

    # -- URLs: the buttons of an alarm's page and the overview -------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        info = "django_alarms_alarm"
        return [
            path("overview/", wrap(self.overview_view), name=f"{info}_overview"),
            path("<path:object_id>/retry/", wrap(self.retry_view), name=f"{info}_retry"),
            path("<path:object_id>/run/", wrap(self.run_view), name=f"{info}_run"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=f"{info}_cancel"),
            path(
                "<path:object_id>/reschedule/",
                wrap(self.reschedule_view),
                name=f"{info}_reschedule",
            ),
            *super().get_urls(),
        ]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        return admin_views.overview(self, request)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, OPERATIONS["retry"])

    def run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, OPERATIONS["run"])

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, OPERATIONS["cancel"])

    def reschedule_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        alarm = self._permitted_alarm(request, object_id, OPERATIONS["reschedule"])
        response = self._reschedule(request, [alarm], single=True)
        assert response is not None
        return response

    def _reschedule(
        self, request: HttpRequest, rows: list[Alarm], *, single: bool
    ) -> HttpResponse | None:
        operation = OPERATIONS["reschedule"]
        return admin_views.reschedule(
            self,
            request,
            rows,
            apply=lambda at: self.apply(request, rows, operation, at=at),
            eligible=operation.eligible,
            single=single,
        )

    def _button(self, request: HttpRequest, object_id: str, operation: Operation) -> HttpResponse:
        """A button of the alarm's page: POST only (with CSRF), same permission as the
        action, then back to the alarm."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        alarm = self._permitted_alarm(request, object_id, operation)
        self.apply(request, [alarm], operation)
        return HttpResponseRedirect(self.alarm_url(alarm))

    def _permitted_alarm(self, request: HttpRequest, object_id: str, operation: Operation) -> Alarm:
        if not self._allowed(request, operation):
            raise PermissionDenied
        alarm = self.get_object(request, unquote(object_id))
        if alarm is None:
            raise Http404(gettext("No alarm with id %(id)s.") % {"id": object_id})
        return alarm

    def alarm_url(self, alarm: Alarm) -> str:
        return reverse(
            "admin:django_alarms_alarm_change",
            args=[quote(alarm.pk)],
            current_app=self.admin_site.name,
        )


def _label(text: str) -> SafeString | str:
    """A key or name on one line, cut with an ellipsis when long (whole in the tooltip)."""
    if not text:
        return "-"
    return format_html('<span class="alarms-label" title="{}">{}</span>', text, text)


def _recurrence(obj: Alarm) -> Any:
    try:
        return obj.get_recurrence()
    except AlarmError:  # a stored schedule this version cannot read: show the rest anyway
        return None


# -- attempts --------------------------------------------------------------------------------


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "outcome_display",
        "number",
        "alarm_link",
        "handler",
        "started",
        "duration_display",
        "worker",
        "error_display",
    )
    list_display_links = ("number",)
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
        "finished",
        "duration_display",
        "worker",
        "error",
        "traceback_display",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Attempt]:
        return super().get_queryset(request).select_related("alarm").only(*_ATTEMPT_LIST_FIELDS)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        # The list loads only what it shows; an attempt's page shows everything.
        queryset = admin.ModelAdmin.get_queryset(self, request).select_related("alarm")
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

    @admin.display(description=_("alarm"))
    def alarm_link(self, obj: Attempt) -> SafeString:
        url = reverse("admin:django_alarms_alarm_change", args=[quote(obj.alarm_id)])
        return format_html('<a href="{}">{}</a>', url, str(obj.alarm))

    @admin.display(description=_("due"))
    def due(self, obj: Attempt) -> str:
        return moment(obj.due_at)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: Attempt) -> str:
        return moment(obj.started_at)

    @admin.display(description=_("finished"))
    def finished(self, obj: Attempt) -> str:
        return moment(obj.finished_at)

    @admin.display(description=_("duration"))
    def duration_display(self, obj: Attempt) -> str:
        return duration(obj.duration)

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
        "handlers",
        "started",
        "heartbeat",
        "liveness",
        "in_flight",
        "stopping",
        "version",
    )
    readonly_fields = fields

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: Worker) -> str:
        return moment(obj.started_at)

    @admin.display(description=_("last heartbeat"), ordering="heartbeat_at")
    def heartbeat(self, obj: Worker) -> SafeString:
        return format_html(
            "{}<br><span class='alarms-relative'>{}</span>",
            moment(obj.heartbeat_at),
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


__all__ = ["AlarmAdmin", "AttemptAdmin", "CappedPaginator", "WorkerAdmin"]
