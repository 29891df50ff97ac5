"""How the admin shows alarms: badges, times, durations, redacted payloads.

The functions are used by the ``admin`` package and, as filters and tags, by the
admin templates (``{% load alarms_admin %}``). Every piece of HTML is built with
``format_html``, so that keys, payloads and errors are always escaped. The tag of the alarm
list's date hierarchy only renders; the dates are found in :mod:`django_alarms.admin.dates`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from datetime import timezone as dt_timezone
from typing import Any, Protocol, cast

from django import template
from django.contrib.admin.views.main import ChangeList
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from django_alarms.conf import alarm_settings
from django_alarms.types import Outcome, State

register = template.Library()

UTC = dt_timezone.utc
MASK = "********"


# -- badges ----------------------------------------------------------------------------------


@register.filter
def state_badge(state: str) -> SafeString:
    """A coloured label for an alarm state."""
    label = State(state).label if state in State.values else state
    return format_html('<span class="alarms-badge alarms-state-{}">{}</span>', state, label)


@register.filter
def outcome_badge(outcome: str) -> SafeString:
    """A coloured label for an attempt outcome."""
    label = Outcome(outcome).label if outcome in Outcome.values else outcome
    return format_html('<span class="alarms-badge alarms-outcome-{}">{}</span>', outcome, label)


def liveness_badge(alive: bool) -> SafeString:
    if alive:
        return format_html('<span class="alarms-badge alarms-alive">{}</span>', _("alive"))
    return format_html('<span class="alarms-badge alarms-dead">{}</span>', _("dead"))


# -- times -----------------------------------------------------------------------------------


@register.filter
def moment(value: datetime | None, zone: tzinfo | None = None) -> str:
    """An instant as ``2031-03-03 10:00:05 CET``, in ``zone`` (default: the current one)."""
    if value is None:
        return "-"
    local = value.astimezone(zone or timezone.get_current_timezone())
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


def span(delta: timedelta) -> str:
    """A length of time in words an operator reads at a glance: ``45 s``, ``3 min``,
    ``2 h 5 min``, ``3 days 4 h``."""
    seconds = abs(int(delta.total_seconds()))
    if seconds < 60:
        return _("%(seconds)d s") % {"seconds": seconds}
    minutes = seconds // 60
    if minutes < 60:
        return _("%(minutes)d min") % {"minutes": minutes}
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        if minutes:
            return _("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": minutes}
        return _("%(hours)d h") % {"hours": hours}
    days, hours = divmod(hours, 24)
    text = ngettext("%(days)d day", "%(days)d days", days) % {"days": days}
    if hours and days < 7:
        text += " " + _("%(hours)d h") % {"hours": hours}
    return text


def relative_due(due_at: datetime, state: str, now: datetime) -> str:
    """When an alarm is due, relative to ``now``: ``in 5 min``, ``3 min late`` (or, for an
    alarm that is not waiting any more, ``3 min ago``)."""
    delta = due_at - now
    if abs(delta) < timedelta(seconds=1):
        return _("due now")
    if delta > timedelta(0):
        return _("in %(span)s") % {"span": span(delta)}
    if state == State.SCHEDULED:
        return _("%(span)s late") % {"span": span(delta)}
    if state == State.PAUSED:
        # Not late: nobody is meant to deliver it until it is resumed (then at once).
        return _("due %(span)s ago") % {"span": span(delta)}
    return _("%(span)s ago") % {"span": span(delta)}


class AlarmTimes(Protocol):
    """The fields of an alarm that say where it stands in time (an ``Alarm`` has them)."""

    state: str
    due_at: datetime
    claimed_at: datetime | None
    finished_at: datetime | None


def ago(moment_: datetime, now: datetime) -> str:
    """``3 min ago``, or ``just now`` within a second."""
    if abs(now - moment_) < timedelta(seconds=1):
        return _("just now")
    return _("%(span)s ago") % {"span": span(now - moment_)}


def alarm_hint(alarm: AlarmTimes, now: datetime) -> str:
    """What an operator needs to know of an alarm's time, in its state: how far its due time
    is while it waits (``in 5 min``, ``3 min late``), how long it has run, when it finished.
    A due time means nothing once the alarm stopped waiting, so it is not compared to now."""
    if alarm.state in (State.SCHEDULED, State.PAUSED):
        return relative_due(alarm.due_at, alarm.state, now)
    if alarm.state == State.RUNNING:
        if alarm.claimed_at is None:
            return _("running")
        return _("running for %(span)s") % {"span": span(now - alarm.claimed_at)}
    if alarm.finished_at is None:
        return ""
    return _("finished %(ago)s") % {"ago": ago(alarm.finished_at, now)}


def due_cell(alarm: AlarmTimes, now: datetime) -> SafeString:
    """The due time and, under it, :func:`alarm_hint` (highlighted when late)."""
    late = alarm.state == State.SCHEDULED and alarm.due_at < now - timedelta(seconds=1)
    local = alarm.due_at.astimezone(timezone.get_current_timezone())
    hint = alarm_hint(alarm, now)
    return format_html(
        '<span class="alarms-due" title="{}">{}</span>{}',
        moment(alarm.due_at),
        local.strftime("%Y-%m-%d %H:%M %Z"),
        format_html(
            '<br><span class="alarms-relative{}">{}</span>', " alarms-late" if late else "", hint
        )
        if hint
        else "",
    )


def duration(seconds: float | None) -> str:
    """An attempt's duration: ``12 ms``, ``1.5 s``, ``2 min 3 s``; ``-`` when unfinished."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return _("%(ms)d ms") % {"ms": round(seconds * 1000)}
    if seconds < 60:
        return _("%(seconds).1f s") % {"seconds": seconds}
    minutes, rest = divmod(int(seconds), 60)
    return _("%(minutes)d min %(seconds)d s") % {"minutes": minutes, "seconds": rest}


def lateness(seconds: float | None) -> str:
    """How late an attempt started after the time it was for: ``0.4 ms``, ``12.3 ms``,
    ``3.4 s``, ``2 min 5 s``; ``2.0 ms early`` when it started before (clocks of two machines
    disagree by that much); ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return _("%(lateness)s early") % {"lateness": lateness(-seconds)}
    if seconds < 1:
        return _("%(ms).1f ms") % {"ms": seconds * 1000}
    if seconds < 60:
        return _("%(seconds).1f s") % {"seconds": seconds}
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return _("%(minutes)d min %(seconds)d s") % {"minutes": minutes, "seconds": rest}
    return span(timedelta(seconds=seconds))


# -- text ------------------------------------------------------------------------------------


def first_line(text: str, length: int = 80) -> str:
    """The first line of ``text``, cut to ``length`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= length else line[: length - 1] + "…"


def short_error(text: str, length: int = 80) -> SafeString | str:
    """The first line of an error, cut short, with the whole text as a tooltip."""
    if not text:
        return ""
    return format_html('<span title="{}">{}</span>', text, first_line(text, length))


#: Levels of a payload shown; deeper ones are left out (the API accepts at most
#: ``validation.MAX_PAYLOAD_DEPTH``; a row written around it may hold more than the page could
#: walk and encode).
SHOWN_DEPTH = 40
TOO_DEEP = "…"


def redact(value: Any, words: Iterable[str] | None = None) -> Any:
    """``value`` with the values under keys that contain one of ``words`` (any case) masked, in
    nested dicts and lists too, and what is nested deeper than :data:`SHOWN_DEPTH` levels left
    out. ``words`` defaults to ``ALARMS["REDACT_KEYS"]``."""
    lowered = tuple(
        word.lower() for word in (alarm_settings.REDACT_KEYS if words is None else words)
    )

    def walk(item: Any, depth: int) -> Any:
        if isinstance(item, (dict, list, tuple)) and depth >= SHOWN_DEPTH:
            return TOO_DEEP
        if isinstance(item, dict):
            return {
                key: MASK
                if any(word in str(key).lower() for word in lowered)
                else walk(inner, depth + 1)
                for key, inner in item.items()
            }
        if isinstance(item, (list, tuple)):
            return [walk(inner, depth + 1) for inner in item]
        return item

    return walk(value, 0)


def pretty_json(value: Any) -> SafeString:
    """A payload as indented JSON in a ``<pre>``, redacted and escaped."""
    text = json.dumps(redact(value), indent=2, ensure_ascii=False, cls=DjangoJSONEncoder)
    return format_html('<pre class="alarms-json">{}</pre>', text)


def traceback_details(error: str, traceback: str) -> SafeString | str:
    """An attempt's error with its traceback folded under it (``<details>``, no JavaScript)."""
    if not error and not traceback:
        return "-"
    if not traceback:
        return format_html('<span class="alarms-error">{}</span>', error)
    return format_html(
        '<details class="alarms-traceback"><summary>{}</summary><pre>{}</pre></details>',
        error or _("traceback"),
        traceback,
    )


# -- the date hierarchy of the alarm list ----------------------------------------------------


class DateHierarchyLinks(Protocol):
    """An admin whose list computes its own date hierarchy (the alarm admin)."""

    def date_hierarchy_links(self, cl: ChangeList) -> dict[str, Any]: ...


@register.inclusion_tag("admin/date_hierarchy.html")
def alarm_date_hierarchy(cl: ChangeList) -> dict[str, Any]:
    """Django's date hierarchy, with the links the list's admin computes (for the alarm list,
    :func:`django_alarms.admin.dates.hierarchy`, made of index probes). The admin package
    imports this library, so the library does not import the admin: it asks the change list's
    admin."""
    return cast(DateHierarchyLinks, cl.model_admin).date_hierarchy_links(cl)
