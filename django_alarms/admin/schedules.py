"""Schedules in the admin: add a recurring or a one-off alarm, edit a recurring alarm's
schedule, and preview its next occurrences before saving.

The forms offer the registered handlers only (never a dotted path), read the payload as JSON
and the schedule as text (a cron expression, a rate such as ``Weekdays(17, 0)``, a duration
such as ``1h30m``: parsed, never evaluated), check the payload with the handler's own
``validate()`` and the schedule with :func:`django_alarms.recurrence.build`, and save through
:func:`alarms.schedule_recurring` / :func:`alarms.schedule` in one transaction with the admin
log entry: an :class:`~django_alarms.exceptions.InvalidAlarm` becomes an error on the field it
names, and nothing is written. Adding needs ``add_alarm``, editing ``change_alarm``.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from datetime import timezone as dt_timezone
from functools import cache
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_alarms import alarms, arguments, clock, recurrence
from django_alarms.admin.base import MISFIRE, WEEKDAY, _uuid
from django_alarms.conf import alarm_settings
from django_alarms.exceptions import AlarmError, InvalidAlarm
from django_alarms.handlers import registry
from django_alarms.models import KEY_MAX_LENGTH, NAME_MAX_LENGTH, Alarm
from django_alarms.recurrence import (
    Daily,
    Days,
    Hours,
    Minutes,
    Rate,
    Recurrence,
    Weekdays,
    WeekdaysAndSaturday,
)
from django_alarms.recurrence.zones import _wall
from django_alarms.templatetags.alarms_admin import moment
from django_alarms.types import ACTIVE_STATES

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    _Base = ModelAdmin[Alarm]
else:
    _Base = object

#: How many occurrences the preview shows.
PREVIEW_COUNT = 10
EXAMPLE_TIME = "2031-03-03 09:30"

# -- text in, values out ---------------------------------------------------------------------

#: The rates a form accepts, by the name written in it.
RATES: dict[str, type[Rate]] = {
    cls.__name__: cls for cls in (Minutes, Hours, Days, Daily, Weekdays, WeekdaysAndSaturday)
}
_COUNTED = (Minutes, Hours, Days)
_RATE_TEXT = re.compile(r"\s*([A-Za-z]+)\s*\(\s*(\d{1,9})\s*(?:,\s*(\d{1,9})\s*)?\)\s*")
_DURATION_TEXT = re.compile(r"\s*(?:\d{1,9}(?:\.\d{1,6})?\s*[dhms]\s*)+", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)\s*([dhms])", re.IGNORECASE)
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_rate(text: str) -> Rate:
    """A rate written as ``Minutes(15)``, ``Days(2)`` or ``Weekdays(17, 0)``: a name among
    :data:`RATES` and whole numbers, read by a regular expression (never evaluated)."""
    match = _RATE_TEXT.fullmatch(text)
    if match is None or match.group(1) not in RATES:
        raise forms.ValidationError(
            _("“%(value)s” is not a rate. Write one of %(examples)s."),
            code="invalid",
            params={
                "value": text,
                "examples": "Minutes(15), Hours(2), Days(1), Daily(9, 0), Weekdays(17, 30), "
                "WeekdaysAndSaturday(8, 0)",
            },
        )
    cls = RATES[match.group(1)]
    numbers = [int(group) for group in match.groups()[1:] if group is not None]
    if cls in _COUNTED and len(numbers) != 1:
        raise forms.ValidationError(
            _("%(rate)s takes one number, such as %(rate)s(15)."),
            code="invalid",
            params={"rate": cls.__name__},
        )
    try:
        return cls(*numbers)
    except InvalidAlarm as error:
        raise forms.ValidationError(str(error), code="invalid") from error


def rate_text(rate: Rate) -> str:
    """What :func:`parse_rate` reads back as ``rate``."""
    if isinstance(rate, _COUNTED):
        return f"{type(rate).__name__}({rate.n})"
    at = cast(Daily, rate)
    return f"{type(rate).__name__}({at.hour}, {at.minute})"


def parse_duration(text: str) -> timedelta:
    """A duration written as ``30s``, ``5m``, ``1h``, ``2d`` or a sum such as ``1h30m``."""
    if _DURATION_TEXT.fullmatch(text) is None:
        raise forms.ValidationError(
            _("“%(value)s” is not a duration. Write it like 30s, 5m, 1h, 2d or 1h30m."),
            code="invalid",
            params={"value": text},
        )
    try:
        return sum(
            (
                timedelta(**{_UNITS[unit.lower()]: float(number)})
                for number, unit in _DURATION_PART.findall(text)
            ),
            timedelta(0),
        )
    except OverflowError:
        raise forms.ValidationError(
            _("“%(value)s” is too long a duration."), code="invalid", params={"value": text}
        ) from None


def duration_text(span: timedelta) -> str:
    """What :func:`parse_duration` reads back as ``span``: ``1h30m``, ``45s``, ``1.5s``."""
    whole, fraction = divmod(span // timedelta(microseconds=1), 1_000_000)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    if fraction:
        parts.append(f"{whole}.{fraction:06d}".rstrip("0") + "s")
    elif whole or not parts:
        parts.append(f"{whole}s")
    return "".join(parts)


def parse_moment(text: str, zone: tzinfo) -> datetime:
    """A date and time; without a UTC offset, a wall time in ``zone``."""
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
        value = value.replace(tzinfo=zone)
    return value


@cache
def zone_choices() -> list[tuple[str, str]]:
    return [(key, key) for key in sorted(zoneinfo.available_timezones() | {"UTC"})]


def _default_zone() -> str:
    return str(getattr(settings, "TIME_ZONE", None) or "UTC")


# -- forms -----------------------------------------------------------------------------------

#: The form field an ``InvalidAlarm`` of the service names (by its ``.field``).
FORM_FIELD = {
    "start_at": "start",
    "end_at": "end",
    "cron/every/rate": None,
}


class AlarmForm(forms.Form):
    """What both forms share: the handler, the payload, the key and the name."""

    handler = forms.ChoiceField(
        label=_("Handler"), help_text=_("One of the handlers registered in this project.")
    )
    payload = forms.CharField(
        label=_("Payload"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "class": "vLargeTextField"}),
        help_text=_('JSON, such as {"account": 7}. Empty means null.'),
    )
    key = forms.CharField(label=_("Key"), max_length=KEY_MAX_LENGTH)
    name = forms.CharField(label=_("Name"), max_length=NAME_MAX_LENGTH)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast(forms.ChoiceField, self.fields["handler"])
        field.choices = [("", "---------"), *((name, name) for name in registry.names())]

    def clean_payload(self) -> Any:
        text = self.cleaned_data["payload"].strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as error:
            raise forms.ValidationError(
                _("This is not valid JSON: %(error)s"), code="json", params={"error": error}
            ) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        spec = registry.get(data.get("handler") or "")
        if spec is not None and "payload" in data:
            try:  # the service's own check: JSON it can store, then the handler's validate()
                arguments.payload_text(data["payload"], spec)
            except InvalidAlarm as error:
                self.add_error("payload", str(error))
        return data

    def service_error(self, error: AlarmError) -> None:
        """Show an error of the service on the field it names (else above the form)."""
        named = getattr(error, "field", None) or ""
        field = FORM_FIELD.get(named, named)
        self.add_error(field if field in self.fields else None, str(error))


class RecurringForm(AlarmForm):
    """A recurring schedule: exactly one of cron, rate and every, in a time zone."""

    cron = forms.CharField(
        label=_("Cron"),
        required=False,
        max_length=200,
        help_text=_("5 fields (6 with seconds first) or @hourly, @daily, @weekly, @monthly…"),
    )
    rate = forms.CharField(
        label=_("Rate"),
        required=False,
        max_length=64,
        help_text=_(
            "Minutes(15), Hours(2), Days(1), Daily(9, 0), Weekdays(17, 30) or "
            "WeekdaysAndSaturday(8, 0)."
        ),
    )
    every = forms.CharField(
        label=_("Every"),
        required=False,
        max_length=64,
        help_text=_("Elapsed time, such as 30s, 5m, 1h or 1h30m: unaffected by DST."),
    )
    timezone = forms.ChoiceField(
        label=_("Time zone"), help_text=_("Wall-clock schedules (cron, rates) run in it.")
    )
    start = forms.CharField(
        label=_("Start"),
        required=False,
        max_length=64,
        help_text=_(
            "Such as 2031-03-03 09:30, in the time zone above (or with a UTC offset). Empty: now."
        ),
    )
    end = forms.CharField(
        label=_("End"),
        required=False,
        max_length=64,
        help_text=_("Optional, like the start: no occurrence after it."),
    )
    misfire = forms.ChoiceField(
        label=_("Misfire"),
        choices=[(policy, MISFIRE[policy]) for policy in recurrence.MISFIRE_POLICIES],
        initial="once",
        help_text=_("What happens to occurrences missed while no worker was running."),
    )

    schedule_fields = ("cron", "rate", "every")
    recurrence: Recurrence | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["timezone"]).choices = zone_choices()
        self.fields["key"].help_text = _("With the name, what identifies the schedule.")

    def clean_cron(self) -> str | None:
        return self.cleaned_data["cron"].strip() or None

    def clean_rate(self) -> Rate | None:
        text = self.cleaned_data["rate"].strip()
        return parse_rate(text) if text else None

    def clean_every(self) -> timedelta | None:
        text = self.cleaned_data["every"].strip()
        return parse_duration(text) if text else None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        given = [name for name in self.schedule_fields if str(self.data.get(name, "")).strip()]
        if len(given) != 1:
            self.add_error(
                None,
                gettext("Give exactly one of cron, rate or every (given: %(given)s).")
                % {"given": ", ".join(given) or gettext("none")},
            )
        zone_key = data.get("timezone")
        zone = ZoneInfo(zone_key) if zone_key else None
        for field, stored in (("start", "start_at"), ("end", "end_at")):
            text = (data.get(field) or "").strip()
            data[stored] = None
            if text and zone is not None:
                try:
                    data[stored] = parse_moment(text, zone)
                except forms.ValidationError as error:
                    self.add_error(field, error)
        if data["start_at"] and data["end_at"] and data["end_at"] <= data["start_at"]:
            self.add_error("end", gettext("The end must be after the start."))
        if not self.errors:
            try:  # the service's checks, and the schedule the preview shows
                self.recurrence = recurrence.build(**self.schedule(), now=clock.now())
            except InvalidAlarm as error:
                self.service_error(error)
        return data

    def schedule(self) -> dict[str, Any]:
        """The arguments of the schedule, for :func:`recurrence.build` and the service."""
        data = self.cleaned_data
        return {
            "cron": data.get("cron"),
            "rate": data.get("rate"),
            "every": data.get("every"),
            "timezone": data.get("timezone"),
            "start_at": data.get("start_at"),
            "end_at": data.get("end_at"),
            "misfire": data.get("misfire", "once"),
        }

    @classmethod
    def initial_for(cls, alarm: Alarm | None) -> dict[str, Any]:
        """The form filled in from ``alarm``'s stored schedule (a new one: the defaults)."""
        rec = alarm.get_recurrence() if alarm is not None else None
        if alarm is None or rec is None:
            return {"timezone": _default_zone(), "misfire": "once"}
        zone = ZoneInfo(rec.timezone)

        def local(value: datetime | None) -> str:
            if value is None:
                return ""
            return value.astimezone(zone).replace(tzinfo=None).isoformat(sep=" ")

        # A start in the past would make the edited alarm due at once (and catch up): an
        # edit starts from now unless its start is still ahead.
        start = rec.start_at if rec.start_at > clock.now() else None
        return {
            "handler": alarm.handler,
            "payload": json.dumps(alarm.payload, indent=2, sort_keys=True),
            "key": alarm.key,
            "name": alarm.name,
            "cron": rec.cron or "",
            "rate": rate_text(rec.rate) if rec.rate is not None else "",
            "every": duration_text(rec.every) if rec.every is not None else "",
            "timezone": rec.timezone,
            "start": local(start),
            "end": local(rec.end_at),
            "misfire": rec.misfire,
        }


class OneOffForm(AlarmForm):
    """One delivery: at a time, or after a delay (neither: now)."""

    at = forms.CharField(
        label=_("At"),
        required=False,
        max_length=64,
        help_text=_("Such as 2031-03-03 09:30, in the admin's time zone (or with a UTC offset)."),
    )
    delay = forms.CharField(
        label=_("Delay"),
        required=False,
        max_length=64,
        help_text=_("Or after a delay such as 30s, 5m or 1h. Neither: now."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in ("key", "name"):
            self.fields[field].required = False
        self.fields["name"].help_text = _(
            "Optional. With the key, it identifies one active alarm: another one with the same "
            "key and name is refused."
        )

    def clean_at(self) -> datetime | None:
        text = self.cleaned_data["at"].strip()
        return parse_moment(text, timezone.get_current_timezone()) if text else None

    def clean_delay(self) -> timedelta | None:
        text = self.cleaned_data["delay"].strip()
        return parse_duration(text) if text else None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("at") is not None and data.get("delay") is not None:
            self.add_error(None, gettext("Give a time (at) or a delay, not both."))
        return data


# -- the preview -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One row of the preview."""

    local: str
    utc: str
    #: The wall time the schedule names, when it does not exist (a DST gap): "" otherwise.
    shifted_from: str
    #: "first" or "second" when the local time happens twice (a DST overlap): "" otherwise.
    ambiguous: str


def _wall_clock(rec: Recurrence) -> bool:
    return rec.cron is not None or isinstance(
        rec.rate, (Days, Daily, Weekdays, WeekdaysAndSaturday)
    )


def preview(rec: Recurrence, count: int = PREVIEW_COUNT) -> list[Occurrence]:
    """The first ``count`` occurrences of ``rec``, in its zone and in UTC, as the workers will
    deliver them (:meth:`Recurrence.first` and :meth:`Recurrence.upcoming`), each marked when
    its wall time falls in a DST gap (moved to the end of the gap) or overlap."""
    first = rec.first()
    if first is None:
        return []
    instants = [first, *rec.upcoming(first, count - 1)]
    zone = ZoneInfo(rec.timezone)
    named: dict[datetime, datetime] = {}
    if _wall_clock(rec):
        # The wall time each occurrence was computed from (the recurrence's own walk).
        for instant, walled in rec._ascending_walls(rec.start_at - timedelta(microseconds=1)):
            if instant > instants[-1]:
                break
            named[instant] = walled
    rows = []
    for instant in instants:
        local = instant.astimezone(zone)
        wall = named.get(instant)
        shifted = wall is not None and wall != _wall(instant, zone)
        naive = local.replace(tzinfo=None)
        twice = (
            naive.replace(tzinfo=zone, fold=0).utcoffset()
            != naive.replace(tzinfo=zone, fold=1).utcoffset()
        )
        rows.append(
            Occurrence(
                local=local.strftime(WEEKDAY),
                utc=instant.astimezone(dt_timezone.utc).strftime("%a %Y-%m-%d %H:%M:%S UTC"),
                shifted_from=wall.strftime("%H:%M:%S") if shifted and wall else "",
                ambiguous=("second" if local.fold else "first") if twice else "",
            )
        )
    return rows


# -- the views -------------------------------------------------------------------------------


class ScheduleAdmin(_Base):
    """The alarm admin's pages that add and edit schedules (a mixin of ``AlarmAdmin``)."""

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        info = "django_alarms_alarm"
        return [
            path("add-recurring/", wrap(self.add_recurring_view), name=f"{info}_add_recurring"),
            path("add-one-off/", wrap(self.add_one_off_view), name=f"{info}_add_one_off"),
            path(
                "<path:object_id>/schedule/",
                wrap(self.edit_schedule_view),
                name=f"{info}_edit_schedule",
            ),
            *super().get_urls(),
        ]

    def add_recurring_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "add_alarm")
        return self._recurring(request, None)

    def edit_schedule_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "change_alarm")
        alarm_id = _uuid(unquote(object_id))
        alarm = Alarm.objects.filter(pk=alarm_id).first() if alarm_id else None
        if alarm is None or not alarm.is_recurring:
            raise Http404(gettext("No recurring alarm with id %(id)s.") % {"id": object_id})
        if alarm.state not in ACTIVE_STATES:
            self.message_user(
                request,
                gettext(
                    "Only the schedule of a scheduled or paused alarm can be edited: this "
                    "one is %(state)s."
                )
                % {"state": alarm.state},
                messages.ERROR,
            )
            return HttpResponseRedirect(self._alarm_url(alarm))
        return self._recurring(request, alarm)

    def add_one_off_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "add_alarm")
        form = OneOffForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            saved = self._save(request, form, lambda: self._schedule_one_off(form), None)
            if saved is not None:
                return saved
        return self._page(request, form, title=_("Add alarm"), alarm=None, rows=None)

    def _recurring(self, request: HttpRequest, alarm: Alarm | None) -> HttpResponse:
        rows = None
        if request.method == "POST":
            form = RecurringForm(request.POST)
            if form.is_valid():
                assert form.recurrence is not None
                if "_preview" in request.POST:
                    rows = preview(form.recurrence)
                else:
                    saved = self._save(
                        request, form, lambda: self._schedule_recurring(form, alarm), alarm
                    )
                    if saved is not None:
                        return saved
        else:
            form = RecurringForm(initial=RecurringForm.initial_for(alarm))
        title = _("Edit schedule") if alarm is not None else _("Add recurring alarm")
        return self._page(request, form, title=title, alarm=alarm, rows=rows)

    def _schedule_recurring(self, form: RecurringForm, alarm: Alarm | None) -> Alarm:
        data = form.cleaned_data
        pair = (data["key"], data["name"])
        # Editing under another key or name (or an alarm that had no name): a new alarm
        # takes the schedule and the old one is cancelled, in the same transaction.
        renamed = alarm is not None and (alarm.key, alarm.name) != pair
        keep: dict[str, Any] = (
            {"priority": alarm.priority, "queue": alarm.queue} if alarm is not None else {}
        )
        saved = alarms.schedule_recurring(
            data["handler"],
            data["payload"],
            **form.schedule(),
            key=data["key"],
            name=data["name"],
            if_exists="error" if renamed else "replace",
            **keep,
        )
        if renamed and alarm is not None:
            alarms.cancel(alarm, reason=f"its schedule moved to alarm {saved.pk} in the admin")
        return saved

    def _schedule_one_off(self, form: OneOffForm) -> Alarm:
        data = form.cleaned_data
        return alarms.schedule(
            data["handler"],
            data["payload"],
            at=data["at"],
            delay=data["delay"],
            key=data["key"],
            name=data["name"],
        )

    def _save(
        self, request: HttpRequest, form: AlarmForm, call: Any, alarm: Alarm | None
    ) -> HttpResponse | None:
        """Save through the service, with the log entry, all or nothing; the redirect, or
        ``None`` with the service's error on the form."""
        data = form.cleaned_data
        db = str(alarm_settings.DATABASE)
        try:
            with transaction.atomic(), transaction.atomic(using=db):
                before = alarm
                if before is None and data["name"]:
                    before = (
                        Alarm.objects.using(db)
                        .filter(key=data["key"], name=data["name"], state__in=ACTIVE_STATES)
                        .first()
                    )
                saved: Alarm = call()
                replaced = before is not None and before.pk == saved.pk
                words = self._words(saved)
                if replaced:
                    message = gettext("Replaced the schedule from the admin: %(what)s.")
                    self.log_change(request, saved, message % {"what": words})
                else:
                    message = gettext("Scheduled from the admin: %(what)s.")
                    self.log_addition(request, saved, message % {"what": words})
                if before is not None and not replaced:  # an edit under another key or name
                    moved = gettext("Cancelled from the admin: its schedule moved to %(id)s.")
                    self.log_change(request, before, moved % {"id": saved.pk})
        except AlarmError as error:  # InvalidAlarm, AlarmExists, InvalidTransition
            form.service_error(error)
            return None
        done = (
            gettext("Replaced “%(alarm)s”: %(what)s, next at %(next)s.")
            if replaced
            else gettext("Scheduled “%(alarm)s”: %(what)s, next at %(next)s.")
        )
        self.message_user(
            request,
            done % {"alarm": saved, "what": words, "next": moment(saved.due_at)},
            messages.SUCCESS,
        )
        if self.has_view_permission(request, saved):
            return HttpResponseRedirect(self._alarm_url(saved))
        return HttpResponseRedirect(reverse("admin:index", current_app=self.admin_site.name))

    def _words(self, alarm: Alarm) -> str:
        rec = alarm.get_recurrence()
        return rec.describe() if rec is not None else gettext("once")

    def _page(
        self,
        request: HttpRequest,
        form: AlarmForm,
        *,
        title: Any,
        alarm: Alarm | None,
        rows: list[Occurrence] | None,
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.model._meta,
            "form": form,
            "alarm": alarm,
            "alarm_url": self._alarm_url(alarm) if alarm is not None else "",
            "recurring": isinstance(form, RecurringForm),
            "preview": rows,
            "preview_zone": form.cleaned_data.get("timezone", "") if rows is not None else "",
            "now": moment(clock.now()),
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/django_alarms/schedule_form.html", context)

    def _require(self, request: HttpRequest, codename: str) -> None:
        if not request.user.has_perm(f"django_alarms.{codename}"):
            raise PermissionDenied

    def _alarm_url(self, alarm: Alarm) -> str:
        return reverse(
            "admin:django_alarms_alarm_change",
            args=[quote(alarm.pk)],
            current_app=self.admin_site.name,
        )


__all__ = [
    "AlarmForm",
    "Occurrence",
    "OneOffForm",
    "RecurringForm",
    "ScheduleAdmin",
    "duration_text",
    "parse_duration",
    "parse_rate",
    "preview",
    "rate_text",
]
