"""The columns of the alarm list: what each row shows, computed from the row alone."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_alarms import clock
from django_alarms.models import Alarm
from django_alarms.templatetags.alarms_admin import due_cell, short_error, state_badge


class AlarmColumns:
    """The ``list_display`` columns of :class:`~django_alarms.admin.alarm.AlarmAdmin`.

    None of them queries the database: each reads fields of the row the list fetched.
    """

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
        return due_cell(obj, clock.now())

    @admin.display(description=_("attempts"))
    def attempts_display(self, obj: Alarm) -> str:
        return f"{obj.budget_attempts}/{obj.max_attempts}"

    @admin.display(description=_("last error"))
    def last_error_display(self, obj: Alarm) -> SafeString | str:
        return short_error(obj.last_error, 60)

    @admin.display(description=_("kind"))
    def kind(self, obj: Alarm) -> str:
        return gettext("recurring") if obj.is_recurring else gettext("one-off")


def _label(text: str) -> SafeString | str:
    """A key or name on one line, cut with an ellipsis when long (whole in the tooltip)."""
    if not text:
        return "-"
    return format_html('<span class="alarms-label" title="{}">{}</span>', text, text)
