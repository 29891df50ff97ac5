"""The alarm admin: the list, an alarm's page, its actions and buttons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_alarms import alarms
from django_alarms.admin import dates, operations, pages
from django_alarms.admin.base import LATEST_ATTEMPTS, MAX_ACTION_ROWS, ReadOnlyAdmin, _uuid
from django_alarms.admin.columns import AlarmColumns
from django_alarms.admin.details import AlarmDetails
from django_alarms.admin.filters import DueWindowFilter, HandlerFilter, KindFilter, QueueFilter
from django_alarms.admin.history import AttemptInline
from django_alarms.admin.operations import OPERATIONS, Operation
from django_alarms.admin.schedules import ScheduleAdmin
from django_alarms.exceptions import AlarmError
from django_alarms.models import Alarm, Attempt
from django_alarms.types import State

#: What an action reads of each selected alarm: enough to say what it will do (no payload).
SELECTION_FIELDS = (
    "id",
    "state",
    "due_at",
    "handler",
    "key",
    "name",
    "max_attempts",
    "attempts",
    "budget_start",
    "recurrence",
    "occurrence_at",
    "cancel_reason",
    "finished_at",
)
#: The states whose list is sorted latest first: these alarms no longer wait for their time.
FINISHED_OR_RUNNING = (State.RUNNING, State.SUCCEEDED, State.FAILED, State.CANCELLED)


@admin.register(Alarm)
class AlarmAdmin(ScheduleAdmin, AlarmColumns, AlarmDetails, ReadOnlyAdmin):
    """The alarm list, an alarm's page, the actions and buttons that change alarms through
    :mod:`django_alarms.alarms`, and two pages of its own: the overview and the reschedule
    form (added by :meth:`get_urls`, the way Django's ``UserAdmin`` adds its password page).

    The list's columns are in :class:`~django_alarms.admin.columns.AlarmColumns`, the fields
    of an alarm's page in :class:`~django_alarms.admin.details.AlarmDetails`.
    """

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
    list_filter = ("state", HandlerFilter, QueueFilter, DueWindowFilter, KindFilter)
    search_fields = ("key", "name")
    search_help_text = _("An alarm id (exact match), or part of a key or name.")
    date_hierarchy = "due_at"
    link_lookups = ("due_at__gte", "due_at__lt")  # the overview's hours
    datetime_lookups = ("due_at__gte", "due_at__lt")
    sortable_by = ("due",)
    list_per_page = 50
    actions = (
        "retry_now",
        "run_now",
        "pause_alarms",
        "resume_alarms",
        "reschedule_alarms",
        "cancel_alarms",
        "delete_alarms",
    )
    inlines = (AttemptInline,)

    # -- lists ------------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alarm]:
        return super().get_queryset(request).defer("payload")

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        """Soonest first (what is overdue on top, then what comes next), along the index on
        ``due_at``; a list of alarms that have stopped waiting (filtered to running,
        succeeded, failed or cancelled ones) latest first."""
        if request.GET.get("state__exact") in FINISHED_OR_RUNNING:
            return ("-due_at",)
        return ("due_at",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Alarm], search_term: str
    ) -> tuple[QuerySet[Alarm], bool]:
        alarm_id = _uuid(search_term)
        if alarm_id is not None:
            return queryset.filter(pk=alarm_id), False
        return super().get_search_results(request, queryset, search_term)

    def date_hierarchy_links(self, cl: ChangeList) -> dict[str, Any]:
        """The dates above the list (for the ``alarm_date_hierarchy`` tag)."""
        return dates.hierarchy(cl)

    # -- the alarm's page -------------------------------------------------------------------

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Alarm | None:
        alarm_id = _uuid(object_id)
        if alarm_id is None:
            return None
        # The list defers the payload; the alarm's page shows it.
        return self.get_queryset(request).defer(None).filter(pk=alarm_id).first()

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
                context["see_attempts"] = True
                context["attempts_made"] = alarm.attempts
                total = Attempt.objects.filter(alarm_id=alarm.pk).count()
                context["attempts_total"] = total
                context["attempts_shown"] = min(total, LATEST_ATTEMPTS)
                context["attempts_url"] = (
                    reverse("admin:django_alarms_attempt_changelist") + f"?alarm={alarm.pk}"
                )
        return super().change_view(request, object_id, form_url, context)

    def get_inline_instances(self, request: HttpRequest, obj: Alarm | None = None) -> list[Any]:
        """The attempts inline, only when there are attempts to list: without, the page says
        "No attempts yet" instead of an empty table (``change_form.html``)."""
        inlines = super().get_inline_instances(request, obj)
        if obj is not None and not Attempt.objects.filter(alarm_id=obj.pk).exists():
            return [inline for inline in inlines if not isinstance(inline, AttemptInline)]
        return inlines

    def _buttons(self, request: HttpRequest, alarm: Alarm) -> dict[str, Any]:
        """The buttons that apply to ``alarm`` and that the user may press: a form that posts
        at once, or a link to a page that asks first (the confirmation, the reschedule form)."""
        buttons = []
        for name, operation in OPERATIONS.items():
            if alarm.state not in operation.eligible or not self._allowed(request, operation):
                continue
            buttons.append(
                {
                    "name": name,
                    "label": operation.label,
                    "url": reverse(f"admin:django_alarms_alarm_{name}", args=[quote(alarm.pk)]),
                    "form": not operation.confirm,
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

    def has_pause_permission(self, request: HttpRequest) -> bool:
        """Pause and resume: Django's *change* permission (``change_alarm``); nothing else of
        an alarm can be changed here."""
        return request.user.has_perm("django_alarms.change_alarm")

    def has_delete_finished_permission(self, request: HttpRequest) -> bool:
        """Deleting failed and cancelled alarms: Django's ``delete_alarm``. The admin's own
        :meth:`has_delete_permission` stays ``False``, which keeps Django's delete of any
        alarm (and its *delete selected* action) away."""
        return request.user.has_perm("django_alarms.delete_alarm")

    def _allowed(self, request: HttpRequest, operation: Operation) -> bool:
        checker = getattr(self, f"has_{operation.permission}_permission")
        return self.has_view_permission(request) and bool(checker(request))

    # -- actions ----------------------------------------------------------------------------

    @admin.action(description=_("Retry selected alarms now"), permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> HttpResponse | None:
        return self._confirmed(request, queryset, OPERATIONS["retry"], "retry_now")

    @admin.action(description=_("Run selected alarms now"), permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> HttpResponse | None:
        return self._confirmed(request, queryset, OPERATIONS["run"], "run_now")

    @admin.action(description=_("Pause selected alarms"), permissions=["pause"])
    def pause_alarms(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> HttpResponse | None:
        return self._confirmed(request, queryset, OPERATIONS["pause"], "pause_alarms")

    @admin.action(description=_("Resume selected alarms"), permissions=["pause"])
    def resume_alarms(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> HttpResponse | None:
        return self._confirmed(request, queryset, OPERATIONS["resume"], "resume_alarms")

    @admin.action(description=_("Cancel selected alarms"), permissions=["cancel"])
    def cancel_alarms(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> HttpResponse | None:
        return self._confirmed(request, queryset, OPERATIONS["cancel"], "cancel_alarms")

    @admin.action(
        description=_("Delete selected failed or cancelled alarms"),
        permissions=["delete_finished"],
    )
    def delete_alarms(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> HttpResponse | None:
        return self._confirmed(request, queryset, OPERATIONS["delete"], "delete_alarms")

    @admin.action(description=_("Reschedule selected alarms…"), permissions=["reschedule"])
    def reschedule_alarms(
        self, request: HttpRequest, queryset: QuerySet[Alarm]
    ) -> HttpResponse | None:
        rows = self._selection(request, queryset)
        if rows is None:
            return None
        return self._reschedule(request, rows, single=False)

    def _confirmed(
        self, request: HttpRequest, queryset: QuerySet[Alarm], operation: Operation, action: str
    ) -> HttpResponse | None:
        """The page that lists what ``operation`` will change and skip; once confirmed (its
        form posts ``post=yes`` with the ids it listed), the change."""
        rows = self._selection(request, queryset)
        if rows is None:
            return None
        if request.POST.get("post") == "yes":
            self._report_missing(request, rows)
            self.apply(request, rows, operation)
            return None
        return pages.confirm(self, request, operations.plan(operation, rows), action=action)

    def _selection(self, request: HttpRequest, queryset: QuerySet[Alarm]) -> list[Alarm] | None:
        """The selected alarms, soonest first, or ``None`` (and a message) when they are too
        many."""
        rows = list(
            queryset.order_by("due_at", "id").only(*SELECTION_FIELDS)[: MAX_ACTION_ROWS + 1]
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

    def _report_missing(self, request: HttpRequest, rows: Sequence[Alarm]) -> None:
        """Say so when alarms listed on the confirmation page are no longer in the list (deleted
        since, or out of the list's filters now): they are left alone."""
        if request.POST.get("select_across"):
            return
        missing = len(set(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))) - len(rows)
        if missing > 0:
            self.message_user(
                request,
                ngettext(
                    "%(count)d selected alarm is no longer in the list (deleted, or out of its "
                    "filters now) and was left alone.",
                    "%(count)d selected alarms are no longer in the list (deleted, or out of "
                    "their filters now) and were left alone.",
                    missing,
                )
                % {"count": missing},
                messages.WARNING,
            )

    def apply(
        self, request: HttpRequest, rows: Sequence[Alarm], operation: Operation, **options: Any
    ) -> int:
        """Call the operation's service for each alarm it applies to, log each change, and
        tell the operator what was done to alarms in which state, what was skipped, and why.
        Return how many changed."""
        planned = operations.plan(operation, rows, **options)
        refusals = [reason for _alarm, reason in planned.refused]
        if operation.name == "delete":
            changed, attempts = self._delete(request, planned, refusals)
        else:
            changed, attempts = [], 0
            for alarm, _effect in planned.change:
                try:
                    operation.call(alarm, request=request, **options)
                except AlarmError as error:  # changed meanwhile, or a (key, name) clash
                    refusals.append(str(error))
                    continue
                self.log_change(request, alarm, operation.log(alarm, options))
                changed.append(alarm.state)
        if changed:
            self.message_user(
                request,
                operation.done(len(changed))
                % {
                    "alarms": operations.alarms_by_state(changed),
                    "attempts": ngettext("%(count)d attempt", "%(count)d attempts", attempts)
                    % {"count": attempts},
                },
                messages.SUCCESS,
            )
        if planned.ineligible:
            self.message_user(
                request,
                gettext("Skipped %(alarms)s: %(reason)s.")
                % {
                    "alarms": operations.alarms_by_state(
                        alarm.state for alarm in planned.ineligible
                    ),
                    "reason": operation.refused,
                },
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
        return len(changed)

    def _delete(
        self, request: HttpRequest, planned: operations.Plan, refusals: list[str]
    ) -> tuple[list[str], int]:
        """Delete the planned alarms in one call of :func:`alarms.delete_finished`, then log
        each one that is gone (an alarm retried meanwhile is kept, and said so)."""
        rows = [alarm for alarm, _effect in planned.change]
        if not rows:
            return [], 0
        ids = [alarm.pk for alarm in rows]
        alarms.delete_finished(ids, states=operations.DELETABLE)
        kept = set(Alarm.objects.filter(pk__in=ids).values_list("pk", flat=True))
        deleted: list[str] = []
        attempts = 0
        for alarm in rows:
            if alarm.pk in kept:
                refusals.append(
                    gettext("alarm %(id)s changed meanwhile and was kept") % {"id": alarm.pk}
                )
                continue
            LogEntry.objects.log_actions(
                user_id=cast(int, request.user.pk),
                queryset=[alarm],
                action_flag=DELETION,
                change_message=planned.operation.log(alarm, {}),
                single_object=True,
            )
            deleted.append(alarm.state)
            attempts += planned.attempts.get(alarm.pk, 0)
        return deleted, attempts

    # -- URLs: the buttons of an alarm's page and the overview -------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        info = "django_alarms_alarm"
        buttons = [
            path(
                f"<path:object_id>/{name}/",
                wrap(self.button_view),
                {"name": name},
                name=f"{info}_{name}",
            )
            for name in ("retry", "run", "cancel", "pause", "resume")
        ]
        return [
            path("overview/", wrap(self.overview_view), name=f"{info}_overview"),
            *buttons,
            path(
                "<path:object_id>/reschedule/",
                wrap(self.reschedule_view),
                name=f"{info}_reschedule",
            ),
            *super().get_urls(),  # with <id>/delete/, answered by delete_view below
        ]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        return pages.overview(self, request)

    def button_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        return self._button(request, object_id, OPERATIONS[name])

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Django's delete page, made the button that deletes a failed or cancelled alarm
        through :func:`alarms.delete_finished` (with the ``delete_alarm`` permission); any
        other alarm is never deleted."""
        return self._button(request, object_id, OPERATIONS["delete"])

    def reschedule_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        alarm = self._permitted_alarm(request, object_id, OPERATIONS["reschedule"])
        response = self._reschedule(request, [alarm], single=True)
        assert response is not None
        return response

    def _reschedule(
        self, request: HttpRequest, rows: list[Alarm], *, single: bool
    ) -> HttpResponse | None:
        operation = OPERATIONS["reschedule"]
        return pages.reschedule(
            self,
            request,
            rows,
            apply=lambda at: self.apply(request, rows, operation, at=at),
            eligible=operation.eligible,
            single=single,
        )

    def _button(self, request: HttpRequest, object_id: str, operation: Operation) -> HttpResponse:
        """A button of the alarm's page, with the same permission as the action. One that
        asks first shows the confirmation page (GET, or a POST without ``post=yes``); the
        change itself is a POST only (with CSRF). Then back to the alarm, or to the list once
        it is deleted."""
        alarm = self._permitted_alarm(request, object_id, operation)
        confirmed = request.method == "POST" and request.POST.get("post") == "yes"
        if operation.confirm and not confirmed:
            return pages.confirm(self, request, operations.plan(operation, [alarm]), action="")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self.apply(request, [alarm], operation)
        if operation.name == "delete" and not Alarm.objects.filter(pk=alarm.pk).exists():
            return HttpResponseRedirect(
                reverse("admin:django_alarms_alarm_changelist", current_app=self.admin_site.name)
            )
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
