"""Pages of the admin beyond lists and detail: the overview, the reschedule form and the
confirmation page of the other actions and buttons.

All are reached through :class:`~django_alarms.admin.alarm.AlarmAdmin` (``get_urls`` and the
"Reschedule…" action), which wraps them in ``admin_site.admin_view`` (staff login, CSRF);
each checks its own permission again here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any, Protocol
from urllib.parse import urlencode

from django import forms
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_alarms import clock, selectors, validation
from django_alarms.admin import lateness
from django_alarms.admin.charts import STACK, _chart
from django_alarms.admin.operations import Operation, Plan, alarms_by_state
from django_alarms.models import Alarm
from django_alarms.templatetags.alarms_admin import lateness as lateness_text
from django_alarms.templatetags.alarms_admin import moment, relative_due, span
from django_alarms.types import Outcome, State


class AlarmPages(Protocol):
    """What the two pages use of the alarm admin (``AlarmAdmin`` has it all; the admin
    imports this module, so the pages name what they need instead of importing it)."""

    model: type[Alarm]
    admin_site: Any

    @property
    def media(self) -> Any: ...

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool: ...
    def has_reschedule_permission(self, request: HttpRequest) -> bool: ...
    def _allowed(self, request: HttpRequest, operation: Operation) -> bool: ...
    def alarm_url(self, alarm: Alarm) -> str: ...


# -- reschedule ------------------------------------------------------------------------------

EXAMPLE_TIME = "2031-03-03 09:30+01:00"


class RescheduleForm(forms.Form):
    """The new due time, with an explicit UTC offset: a wall time alone is ambiguous."""

    at = forms.CharField(
        label=_("New due time"),
        max_length=64,
        help_text=_(
            "A date and time with its UTC offset, such as 2031-03-03 09:30+01:00 or "
            "2031-03-03T08:30Z. A past time makes the alarm due at once."
        ),
        widget=forms.TextInput(attrs={"size": 34, "autocomplete": "off"}),
    )

    def clean_at(self) -> datetime:
        text = self.cleaned_data["at"].strip()
        try:
            value = parse_datetime(text)
        except ValueError:  # well formed, but no such date (February 30th)
            value = None
        if value is None:
            raise forms.ValidationError(
                _("“%(value)s” is not a date and time. Write it like %(example)s."),
                code="invalid",
                params={"value": text, "example": EXAMPLE_TIME},
            )
        if timezone.is_naive(value):
            raise forms.ValidationError(
                _(
                    "“%(value)s” has no UTC offset, so it could mean different instants. Add "
                    "one, such as +01:00, or Z for UTC."
                ),
                code="naive",
                params={"value": text},
            )
        try:
            validation.storable("at", value)
        except ValueError as error:  # years past 9999 in UTC, which no database reads back
            raise forms.ValidationError(str(error), code="out_of_range") from error
        return value.astimezone(dt_timezone.utc)


def reschedule(
    model_admin: AlarmPages,
    request: HttpRequest,
    rows: Sequence[Alarm],
    *,
    apply: Callable[[datetime], int],
    eligible: Sequence[str],
    single: bool = False,
) -> HttpResponse | None:
    """The intermediate page of "Reschedule…": for the changelist action (``single=False``:
    returns ``None`` once done, and Django goes back to the list) or for the button of one
    alarm's page (redirects to the alarm)."""
    if not model_admin.has_view_permission(request) or not model_admin.has_reschedule_permission(
        request
    ):
        raise PermissionDenied
    submitted = request.method == "POST" and (single or "apply" in request.POST)
    if submitted:
        form = RescheduleForm(request.POST)
        if form.is_valid():
            apply(form.cleaned_data["at"])
            if single:
                return HttpResponseRedirect(model_admin.alarm_url(rows[0]))
            return None
    else:
        start = rows[0].due_at if single else clock.now() + timedelta(hours=1)
        initial = timezone.localtime(start).replace(microsecond=0).isoformat(sep=" ")
        form = RescheduleForm(initial={"at": initial})
    opts = model_admin.model._meta
    shown = list(rows[:50])
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Reschedule an alarm") if single else _("Reschedule alarms"),
        "subtitle": None,
        "opts": opts,
        "form": form,
        "alarms": [
            {
                "alarm": alarm,
                "url": model_admin.alarm_url(alarm),
                "eligible": alarm.state in eligible,
                "due": moment(alarm.due_at),
            }
            for alarm in shown
        ],
        "more": len(rows) - len(shown),
        "skipped": sum(alarm.state not in eligible for alarm in rows),
        "single": single,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": [str(alarm.pk) for alarm in rows],
        "now": moment(clock.now()),
        "media": model_admin.media,
    }
    return TemplateResponse(request, "admin/django_alarms/alarm/reschedule.html", context)


# -- confirmation ----------------------------------------------------------------------------

#: Rows listed on a confirmation page in each table; the rest are counted.
CONFIRM_SHOWN = 100


def confirm(
    model_admin: AlarmPages, request: HttpRequest, plan: Plan, *, action: str
) -> HttpResponse:
    """The page that asks before an operation, as Django's *delete selected* does: what will
    change (each alarm with what will happen to it) and what will be skipped (with why), then
    a button that posts the ids listed with ``post=yes``. ``action`` is the list action's
    name; empty for the button of one alarm's page (the form then posts to the page itself)."""
    operation = plan.operation
    if not model_admin._allowed(request, operation):
        raise PermissionDenied
    single = not action
    rows = [alarm for alarm, _effect in plan.change] + [alarm for alarm, _why in plan.skip]

    def listed(items: list[tuple[Alarm, str]]) -> list[dict[str, Any]]:
        return [
            {
                "alarm": alarm,
                "url": model_admin.alarm_url(alarm),
                "due": moment(alarm.due_at),
                "text": text,
                "attempts": plan.attempts.get(alarm.pk),
            }
            for alarm, text in items[:CONFIRM_SHOWN]
        ]

    back = model_admin.alarm_url(rows[0]) if single else request.get_full_path()
    context = {
        **model_admin.admin_site.each_context(request),
        "title": operation.question(len(rows)) % {"count": len(rows)},
        "subtitle": None,
        "opts": model_admin.model._meta,
        "operation": operation,
        "change": listed(plan.change),
        "change_more": max(0, len(plan.change) - CONFIRM_SHOWN),
        "change_summary": alarms_by_state(alarm.state for alarm, _effect in plan.change),
        "skip": listed(plan.skip),
        "skip_more": max(0, len(plan.skip) - CONFIRM_SHOWN),
        "skip_summary": alarms_by_state(alarm.state for alarm, _why in plan.skip),
        "button": operation.button(len(plan.change)) % {"count": len(plan.change)},
        "single": single,
        "first": rows[0],
        "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": [str(alarm.pk) for alarm in rows],
        "back_url": back,
        "now": moment(clock.now()),
        "media": model_admin.media,
    }
    return TemplateResponse(request, "admin/django_alarms/alarm/confirm.html", context)


def _changelist(model: str, **params: Any) -> str:
    url = reverse(f"admin:django_alarms_{model}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def overview(model_admin: AlarmPages, request: HttpRequest) -> HttpResponse:
    """What is coming, what happened, what needs a look: one page for the operator on call.

    Every number is a bounded query: capped counts per state, one index range for the next
    24 hours, one for the last 24 hours of attempts, an index probe for the oldest overdue
    alarm, and the latest attempts of the last hour (at most
    :data:`~django_alarms.admin.lateness.MAX_LATENESS_ROWS`) for the lateness per handler.
    """
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    now = clock.now()
    user = request.user
    see_attempts = user.has_perm("django_alarms.view_attempt")
    see_workers = user.has_perm("django_alarms.view_worker")

    counts = selectors.state_counts()
    states = [
        {
            "state": state,
            "label": label,
            "count": counts[state],
            "url": _changelist("alarm", state__exact=state),
        }
        for state, label in State.choices
    ]
    overdue = selectors.overdue_count(now=now)
    oldest = selectors.oldest_overdue(now=now)

    coming = _chart(
        title=gettext("Coming: alarms due per hour, next 24 hours"),
        y_title=gettext("alarms"),
        hours=[
            (hour, {"scheduled": count})
            for hour, count in selectors.due_per_hour(now=now, hours_ahead=24)
        ],
        series=[("scheduled", gettext("scheduled"))],
        link=lambda hour: _changelist(
            "alarm",
            state__exact=State.SCHEDULED,
            due_at__gte=hour.isoformat(),
            due_at__lt=(hour + timedelta(hours=1)).isoformat(),
        ),
        empty_text=gettext("No alarm is due in the next 24 hours."),
        first_label=gettext("now"),
    )
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": _("Alarms overview"),
        "subtitle": None,
        "opts": model_admin.model._meta,
        "now": moment(now),
        "states": states,
        "overdue": overdue,
        "overdue_url": _changelist("alarm", due="overdue"),
        "oldest": oldest,
        "oldest_late": relative_due(oldest.due_at, oldest.state, now) if oldest else "",
        "oldest_url": model_admin.alarm_url(oldest) if oldest else "",
        "coming": coming,
        "see_attempts": see_attempts,
        "see_workers": see_workers,
        "media": model_admin.media,
    }
    if see_attempts:
        context["happened"] = _chart(
            title=gettext("Happened: attempt outcomes per hour, last 24 hours"),
            y_title=gettext("attempts"),
            hours=selectors.outcomes_per_hour(now=now, hours_back=24),
            series=[
                (outcome, str(label)) for outcome, label in Outcome.choices if outcome in STACK
            ],
            link=lambda hour: _changelist(
                "attempt",
                started_at__gte=hour.isoformat(),
                started_at__lt=(hour + timedelta(hours=1)).isoformat(),
            ),
            empty_text=gettext("No attempt in the last 24 hours."),
            last_label=gettext("now"),
        )
        late = lateness.by_handler(now=now)
        context["lateness"] = late
        context["lateness_rows"] = [
            {
                "handler": row.handler,
                "attempts": row.attempts,
                "p50": lateness_text(row.p50),
                "p99": lateness_text(row.p99),
                "worst": lateness_text(row.worst),
                "url": _changelist(
                    "attempt", handler=row.handler, started_at__gte=late.since.isoformat()
                ),
            }
            for row in late.rows
        ]
        since = now - timedelta(hours=24)
        context["failing"] = [
            {
                "handler": row.handler,
                "failures": row.failures,
                "last": gettext("%(span)s ago") % {"span": span(now - row.last_failure_at)},
                "last_at": moment(row.last_failure_at),
                "error": row.last_error,
                "attempts_url": _changelist(
                    "attempt", handler=row.handler, started_at__gte=since.isoformat()
                ),
                "failed_url": _changelist("alarm", handler=row.handler, state__exact=State.FAILED),
            }
            for row in selectors.failing_handlers(now=now)
        ]
    if see_workers:
        summary = selectors.worker_summary(alive_since=selectors.alive_since(now))
        context["workers"] = summary
        context["workers_text"] = ", ".join(
            [
                ngettext("%(count)d alive", "%(count)d alive", summary.alive)
                % {"count": summary.alive},
                ngettext("%(count)d dead", "%(count)d dead", summary.dead)
                % {"count": summary.dead},
                ngettext(
                    "%(count)d attempt in flight", "%(count)d attempts in flight", summary.in_flight
                )
                % {"count": summary.in_flight},
            ]
        )
        context["workers_url"] = _changelist("worker")
    return TemplateResponse(request, "admin/django_alarms/overview.html", context)


__all__ = ["RescheduleForm", "confirm", "overview", "reschedule"]
