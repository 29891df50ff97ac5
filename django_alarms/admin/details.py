"""The read-only fields of an alarm's page, and the panels they are grouped in."""

from __future__ import annotations

from datetime import timezone as dt_timezone
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_alarms import clock
from django_alarms.admin.base import MISFIRE, WEEKDAY
from django_alarms.conf import alarm_settings
from django_alarms.exceptions import AlarmError
from django_alarms.handlers import registry
from django_alarms.models import Alarm
from django_alarms.templatetags.alarms_admin import ago, alarm_hint, moment, pretty_json
from django_alarms.types import ACTIVE_STATES, FINAL_STATES, State


class AlarmDetails:
    """The fields of :class:`~django_alarms.admin.alarm.AlarmAdmin`'s change page, all
    read-only, in panels that show only what applies to the alarm (its occurrence and
    schedule when it recurs, its claim while it runs, why it was cancelled)."""

    # Annotated as django-stubs declares it on ModelAdmin, which a mixin must repeat exactly.
    readonly_fields: ClassVar[list[str] | tuple[str, ...] | tuple[()]] = (
        "id",
        "state_display",
        "handler",
        "key",
        "name",
        "queue",
        "priority",
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
        "trace_display",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Alarm | None = None) -> Any:
        times = ["due_detail", "created", "updated", "finished"]
        if obj is not None and obj.is_recurring:
            times.insert(1, "occurrence")
        attempts = ["attempts_detail", "timeout_display", "last_error_detail"]
        if obj is not None and obj.state == State.RUNNING:
            attempts.append("claim")
        if obj is not None and obj.cancel_reason:
            attempts.append("cancel_reason")
        identity = ["id", "state_display", "handler", "key", "name", "queue", "priority"]
        if obj is not None and obj.trace_context:
            identity.append("trace_display")
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, {"fields": identity}),
            (_("Time"), {"fields": times}),
            (_("Attempts"), {"fields": attempts}),
            (_("Payload"), {"fields": ("payload_display",)}),
        ]
        if obj is not None and obj.is_recurring:
            fieldsets.append(
                (_("Schedule"), {"fields": ("schedule", "upcoming", "schedule_bounds")})
            )
        return fieldsets

    @admin.display(description=_("scheduled in trace"))
    def trace_display(self, obj: Alarm) -> SafeString:
        """The trace and span that scheduled the alarm (what a tracing UI searches by)."""
        parts = obj.trace_context.split("-")
        if len(parts) != 4:
            return format_html("<code>{}</code>", obj.trace_context)
        return format_html(
            "<code>{}</code> &nbsp;<span class='alarms-relative'>({} {})</span>",
            parts[1],
            gettext("span"),
            parts[2],
        )

    @admin.display(description=_("due"))
    def due_detail(self, obj: Alarm) -> SafeString | str:
        if obj.state in FINAL_STATES:  # the "finished" row says when it ended
            return moment(obj.due_at)
        return _with_hint(moment(obj.due_at), alarm_hint(obj, clock.now()))

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
    def finished(self, obj: Alarm) -> SafeString | str:
        if obj.finished_at is None:
            return "-"
        return _with_hint(moment(obj.finished_at), ago(obj.finished_at, clock.now()))

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
        """The time limit of the alarm's next attempt, and where it comes from: the alarm's
        own, else its handler's (as registered in this process), else ``ALARMS["TIMEOUT"]``
        (the order in which the worker looks)."""
        if obj.timeout is not None:
            return gettext("%(seconds)s (the alarm's own)") % {"seconds": _seconds(obj.timeout)}
        spec = registry.get(obj.handler)
        if spec is None:
            return gettext(
                "%(seconds)s (the TIMEOUT setting: the handler is not registered in this "
                "process, a worker that has it may use its own)"
            ) % {"seconds": _seconds(alarm_settings.TIMEOUT.total_seconds())}
        if spec.timeout is not None:
            return gettext("%(seconds)s (the handler's)") % {
                "seconds": _seconds(spec.timeout.total_seconds())
            }
        return gettext("%(seconds)s (the TIMEOUT setting)") % {
            "seconds": _seconds(alarm_settings.TIMEOUT.total_seconds())
        }

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
            occurrences = recurrence.upcoming(clock.now(), 5)
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


def _seconds(value: float) -> str:
    return gettext("%(seconds)g s") % {"seconds": value}


def _with_hint(text: str, hint: str) -> SafeString | str:
    """An instant and, after it, what it means now (``in 5 min``, ``3 min ago``)."""
    if not hint:
        return text
    return format_html("{} &nbsp;<span class='alarms-relative'>({})</span>", text, hint)


def _recurrence(obj: Alarm) -> Any:
    try:
        return obj.get_recurrence()
    except AlarmError:  # a stored schedule this version cannot read: show the rest anyway
        return None
