"""The admin's schedule forms, through Django's test client: adding recurring and one-off
alarms, editing a schedule, the preview across DST changes, permissions, validation errors
(nothing written on any of them) and the admin log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.test import Client
from django.urls import reverse

from django_alarms import alarms, clock
from django_alarms.admin.schedules import (
    duration_text,
    parse_duration,
    parse_rate,
    rate_text,
)
from django_alarms.models import Alarm
from django_alarms.recurrence import Daily, Hours, Weekdays
from tests.test_admin import VIEW_ALL, client_for, messages_of, staff

pytestmark = pytest.mark.django_db

UTC = dt_timezone.utc
PARIS = ZoneInfo("Europe/Paris")
ADD_RECURRING = reverse("admin:django_alarms_alarm_add_recurring")
ADD_ONE_OFF = reverse("admin:django_alarms_alarm_add_one_off")
CHANGELIST = reverse("admin:django_alarms_alarm_changelist")


def edit_url(alarm: Alarm) -> str:
    return reverse("admin:django_alarms_alarm_edit_schedule", args=[alarm.pk])


def change_url(alarm: Alarm) -> str:
    return reverse("admin:django_alarms_alarm_change", args=[alarm.pk])


@pytest.fixture
def now() -> Iterator[datetime]:
    moment = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
    with clock.frozen(moment):
        yield moment


@pytest.fixture
def users(django_user_model: Any) -> dict[str, Client]:
    """A client per permission level."""
    return {
        "view": client_for(staff(django_user_model, "v", *VIEW_ALL)),
        "change": client_for(staff(django_user_model, "c", *VIEW_ALL, "change_alarm")),
        "add": client_for(staff(django_user_model, "a", *VIEW_ALL, "add_alarm")),
        "full": client_for(
            staff(django_user_model, "f", *VIEW_ALL, "add_alarm", "change_alarm", "delete_alarm")
        ),
    }


@pytest.fixture
def full(users: dict[str, Client]) -> Client:
    return users["full"]


def recurring(**fields: Any) -> dict[str, Any]:
    data = {
        "handler": "tests.ok",
        "payload": '{"account": 7}',
        "key": "reports",
        "name": "daily",
        "cron": "",
        "rate": "",
        "every": "",
        "timezone": "Europe/Paris",
        "start": "",
        "end": "",
        "misfire": "once",
        "_save": "Save",
    }
    data.update(fields)
    return data


def one_off(**fields: Any) -> dict[str, Any]:
    data = {
        "handler": "tests.ok",
        "payload": '{"account": 7}',
        "key": "acc-7",
        "name": "reminder",
        "at": "",
        "delay": "",
    }
    data.update(fields)
    return data


def errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    return {field: list(messages) for field, messages in response.context["form"].errors.items()}


def nothing_written() -> None:
    assert not Alarm.objects.exists()
    assert not LogEntry.objects.exists()


# -- text in, values out ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("Weekdays(17, 0)", Weekdays(17, 0)),
        ("Hours(2)", Hours(2)),
        (" Daily( 9 ,30 ) ", Daily(9, 30)),
    ],
)
def test_rates_read_as_text(text: str, rate: Any) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(rate_text(rate)) == rate


@pytest.mark.parametrize("text", ["__import__('os')", "Weekdays(25, 0)", "Hours(1, 2)", "Cron(1)"])
def test_rates_that_are_not(text: str) -> None:
    from django import forms

    with pytest.raises(forms.ValidationError):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1.5s", timedelta(seconds=1.5)),
    ],
)
def test_durations(text: str, span: timedelta) -> None:
    assert parse_duration(text) == span
    assert parse_duration(duration_text(span)) == span


# -- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "add", "edit"),
    [("view", 403, 403), ("change", 403, 200), ("add", 200, 403), ("full", 200, 200)],
)
def test_permissions(
    users: dict[str, Client], now: datetime, level: str, add: int, edit: int
) -> None:
    alarm = alarms.schedule_recurring("tests.ok", rate=Hours(1), key="k", name="n")
    client = users[level]
    assert client.get(ADD_RECURRING).status_code == add
    assert client.get(ADD_ONE_OFF).status_code == add
    assert client.post(ADD_RECURRING, recurring(every="5m")).status_code in (add, 302)
    assert client.post(ADD_ONE_OFF, one_off()).status_code in (add, 302)
    assert client.get(edit_url(alarm)).status_code == edit
    assert client.post(edit_url(alarm), recurring(every="5m", key="k", name="n")).status_code in (
        edit,
        302,
    )
    listed = client.get(CHANGELIST).content.decode()
    assert ("Add recurring alarm" in listed) == (add == 200)
    page = client.get(change_url(alarm)).content.decode()
    assert ("Edit schedule" in page) == (edit == 200)
    if add == 403 and edit == 403:
        assert Alarm.objects.count() == 1
        assert not LogEntry.objects.exists()


def test_anonymous_users_go_to_the_login_page() -> None:
    response = Client().get(ADD_RECURRING)
    assert response.status_code == 302
    assert "login" in response["Location"]


# -- adding a recurring alarm ----------------------------------------------------------------


def test_add_recurring_saves_through_the_service(full: Client, now: datetime) -> None:
    response = full.post(ADD_RECURRING, recurring(rate="Weekdays(17, 0)"), follow=True)
    alarm = Alarm.objects.get()
    assert response.redirect_chain[-1][0] == change_url(alarm)
    rec = alarm.get_recurrence()
    assert rec is not None
    assert rec.rate == Weekdays(17, 0)
    assert rec.timezone == "Europe/Paris"
    assert rec.misfire == "once"
    assert (alarm.handler, alarm.key, alarm.name, alarm.payload) == (
        "tests.ok",
        "reports",
        "daily",
        {"account": 7},
    )
    # Tuesday 2026-10-20 at 17:00 in Paris (CEST, +02:00).
    assert alarm.due_at == datetime(2026, 10, 20, 15, 0, tzinfo=UTC)
    entry = LogEntry.objects.get()
    assert entry.action_flag == ADDITION
    assert entry.object_id == str(alarm.pk)
    assert "Monday through Friday" in entry.change_message
    [message] = messages_of(response)
    assert message.startswith("Scheduled “tests.ok reports/daily”")
    assert "next at 2026-10-20 17:00:00 CEST" in message


def test_add_recurring_stores_what_the_service_stores(full: Client, now: datetime) -> None:
    data = recurring(
        cron="30 2 * * *",
        start="2026-10-22 00:00",
        end="2027-04-01 00:00",
        misfire="skip",
    )
    full.post(ADD_RECURRING, data)
    saved = Alarm.objects.get()
    expected = alarms.schedule_recurring(
        "tests.ok",
        {"account": 7},
        cron="30 2 * * *",
        timezone="Europe/Paris",
        start_at=datetime(2026, 10, 22, tzinfo=PARIS),
        end_at=datetime(2027, 4, 1, tzinfo=PARIS),
        misfire="skip",
        key="other",
        name="daily",
    )
    assert saved.recurrence == expected.recurrence
    assert saved.due_at == expected.due_at


def test_add_every(full: Client, now: datetime) -> None:
    full.post(ADD_RECURRING, recurring(every="1h30m", timezone="UTC"))
    rec = Alarm.objects.get().get_recurrence()
    assert rec is not None
    assert rec.every == timedelta(minutes=90)


def test_adding_an_existing_key_and_name_replaces_it(full: Client, now: datetime) -> None:
    alarm = alarms.schedule_recurring("tests.ok", rate=Hours(1), key="reports", name="daily")
    response = full.post(ADD_RECURRING, recurring(rate="Daily(9, 0)"), follow=True)
    assert Alarm.objects.get().pk == alarm.pk
    rec = Alarm.objects.get().get_recurrence()
    assert rec is not None
    assert rec.rate == Daily(9, 0)
    assert LogEntry.objects.get().action_flag == CHANGE
    assert messages_of(response)[0].startswith("Replaced")


# -- validation errors: nothing written ------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"payload": "{not json", "every": "5m"}, "payload", "not valid JSON"),
        (
            {"handler": "tests.validated", "payload": '{"x": 1}', "every": "5m"},
            "payload",
            "account",
        ),
        ({"cron": "*/5 * * * *", "every": "5m"}, "__all__", "exactly one"),
        ({"cron": "*/5 * * * *", "rate": "Hours(1)", "every": "5m"}, "__all__", "exactly one"),
        ({}, "__all__", "exactly one"),
        ({"every": "5m", "timezone": "Mars/Olympus"}, "timezone", "valid choice"),
        ({"every": "5m", "start": "2027-01-02 00:00", "end": "2027-01-01 00:00"}, "end", "after"),
        ({"every": "5m", "end": "2026-01-01 00:00"}, "end", "after start_at"),
        ({"handler": "os.system", "every": "5m"}, "handler", "valid choice"),
        ({"cron": "61 * * * *"}, "cron", "cron"),
        ({"rate": "Weekdays(24, 0)"}, "rate", "hour"),
        ({"rate": "eval('1')"}, "rate", "not a rate"),
        ({"every": "soon"}, "every", "not a duration"),
        ({"every": "5m", "start": "next week"}, "start", "not a date"),
        ({"every": "5m", "key": ""}, "key", "required"),
        ({"every": "5m", "name": ""}, "name", "required"),
        ({"every": "5m", "misfire": "sometimes"}, "misfire", "valid choice"),
        ({"every": "5m", "payload": '"\\u0000"'}, "payload", "NUL"),
    ],
)
def test_recurring_form_errors(
    full: Client, now: datetime, fields: dict[str, Any], field: str, words: str
) -> None:
    found = errors(full.post(ADD_RECURRING, recurring(**fields)))
    assert field in found, found
    assert any(words.lower() in message.lower() for message in found[field]), found
    nothing_written()


@pytest.mark.parametrize("button", ["_save", "_preview"])
def test_an_error_of_the_service_names_its_field(
    full: Client, now: datetime, button: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An InvalidAlarm raised while saving (the handler's validate() says no only then, say)
    becomes an error on the field it names, never a 500."""
    calls = []

    def picky(payload: Any) -> None:
        calls.append(payload)
        if len(calls) > 1:
            raise ValueError("changed its mind")

    spec = alarms.handler("tests.picky", validate=picky)(lambda alarm: None)
    assert spec is not None
    data = recurring(handler="tests.picky", every="5m")
    data.pop("_save")
    response = full.post(ADD_RECURRING, {**data, button: "x"})
    if button == "_save":
        assert "changed its mind" in " ".join(errors(response)["payload"])
    nothing_written()


def test_running_alarm_cannot_be_replaced(full: Client, now: datetime) -> None:
    alarm = alarms.schedule_recurring("tests.ok", rate=Hours(1), key="reports", name="daily")
    Alarm.objects.filter(pk=alarm.pk).update(state="running")
    found = errors(full.post(edit_url(alarm), recurring(every="5m")))
    assert "running" in " ".join(found["__all__"])
    assert not LogEntry.objects.exists()
    assert Alarm.objects.get().get_recurrence().rate == Hours(1)  # type: ignore[union-attr]


# -- the preview -----------------------------------------------------------------------------


def preview_of(client: Client, **fields: Any) -> list[Any]:
    response = client.post(ADD_RECURRING, {**recurring(**fields), "_preview": "Preview"})
    assert response.status_code == 200
    assert response.context["form"].is_valid(), response.context["form"].errors
    nothing_written()
    return list(response.context["preview"])


def test_preview_across_a_dst_gap(full: Client, now: datetime) -> None:
    """Paris springs forward on Sunday 2027-03-28: 02:30 does not exist and fires at 03:00."""
    rows = preview_of(full, rate="Daily(2, 30)", start="2027-03-24 00:00")
    assert len(rows) == 10
    assert [row.local[:16] for row in rows[:6]] == [
        "Wed 2027-03-24 0",
        "Thu 2027-03-25 0",
        "Fri 2027-03-26 0",
        "Sat 2027-03-27 0",
        "Sun 2027-03-28 0",
        "Mon 2027-03-29 0",
    ]
    gap = rows[4]
    assert gap.local == "Sun 2027-03-28 03:00:00 CEST"
    assert gap.utc == "Sun 2027-03-28 01:00:00 UTC"
    assert gap.shifted_from == "02:30:00"
    assert rows[3].local == "Sat 2027-03-27 02:30:00 CET"
    assert rows[3].utc == "Sat 2027-03-27 01:30:00 UTC"
    assert rows[5].utc == "Mon 2027-03-29 00:30:00 UTC"
    assert [row for row in rows if row.shifted_from or row.ambiguous] == [gap]


def test_preview_across_a_dst_overlap(full: Client, now: datetime) -> None:
    """Paris falls back on Sunday 2026-10-25: 02:30 happens twice and fires at the first."""
    response = full.post(
        ADD_RECURRING,
        {**recurring(cron="30 2 * * *", start="2026-10-23 00:00"), "_preview": "Preview"},
    )
    rows = response.context["preview"]
    overlap = rows[2]
    assert overlap.local == "Sun 2026-10-25 02:30:00 CEST"
    assert overlap.utc == "Sun 2026-10-25 00:30:00 UTC"
    assert overlap.ambiguous == "first"
    assert rows[3].utc == "Mon 2026-10-26 01:30:00 UTC"
    assert [row for row in rows if row.shifted_from or row.ambiguous] == [overlap]
    page = response.content.decode()
    assert "alarms-dst-overlap" in page
    assert "ambiguous" in page
    assert "Sun 2026-10-25 00:30:00 UTC" in page


def test_preview_of_elapsed_time_marks_both_passes(full: Client, now: datetime) -> None:
    rows = preview_of(full, every="30m", start="2026-10-25 01:30")
    passes = [(row.local, row.ambiguous) for row in rows if row.ambiguous]
    assert passes == [
        ("Sun 2026-10-25 02:00:00 CEST", "first"),
        ("Sun 2026-10-25 02:30:00 CEST", "first"),
        ("Sun 2026-10-25 02:00:00 CET", "second"),
        ("Sun 2026-10-25 02:30:00 CET", "second"),
    ]
    assert not any(row.shifted_from for row in rows)


def test_preview_with_a_gap_in_cron_minutes(full: Client, now: datetime) -> None:
    """Every 20 minutes: 02:00, 02:20 and 02:40 on 2027-03-28 are one occurrence at 03:00."""
    rows = preview_of(full, cron="*/20 * * * *", start="2027-03-28 01:20")
    assert [(row.local[15:20], row.shifted_from) for row in rows[:4]] == [
        ("01:20", ""),
        ("01:40", ""),
        ("03:00", "02:00:00"),
        ("03:20", ""),
    ]


def test_preview_shows_errors_instead(full: Client, now: datetime) -> None:
    response = full.post(ADD_RECURRING, {**recurring(), "_preview": "Preview"})
    assert response.context["preview"] is None
    assert "exactly one" in " ".join(errors(response)["__all__"])
    nothing_written()


def test_preview_stops_at_the_end(full: Client, now: datetime) -> None:
    rows = preview_of(full, rate="Daily(9, 0)", start="2026-11-01 00:00", end="2026-11-03 12:00")
    assert len(rows) == 3


# -- editing ---------------------------------------------------------------------------------


def test_edit_is_filled_in_from_the_alarm(full: Client, now: datetime) -> None:
    alarm = alarms.schedule_recurring(
        "tests.ok",
        {"account": 7},
        rate=Weekdays(17, 30),
        timezone="Europe/Paris",
        end_at=datetime(2027, 1, 1, tzinfo=PARIS),
        misfire="all",
        key="reports",
        name="daily",
    )
    page = full.get(change_url(alarm)).content.decode()
    assert edit_url(alarm) in page
    form = full.get(edit_url(alarm)).context["form"]
    assert form.initial["rate"] == "Weekdays(17, 30)"
    assert form.initial["timezone"] == "Europe/Paris"
    assert form.initial["end"] == "2027-01-01 00:00:00"
    assert form.initial["misfire"] == "all"
    assert form.initial["start"] == ""  # in the past: an edit starts from now
    assert '"account": 7' in form.initial["payload"]


def test_edit_replaces_the_schedule(full: Client, now: datetime) -> None:
    alarm = alarms.schedule_recurring(
        "tests.ok", {"account": 7}, rate=Hours(1), key="reports", name="daily", priority=5
    )
    response = full.post(edit_url(alarm), recurring(every="15m", timezone="UTC"), follow=True)
    assert response.redirect_chain[-1][0] == change_url(alarm)
    saved = Alarm.objects.get()
    assert saved.pk == alarm.pk
    rec = saved.get_recurrence()
    assert rec is not None
    assert rec.every == timedelta(minutes=15)
    assert rec.rate is None
    assert saved.priority == 5
    assert saved.due_at == now
    entry = LogEntry.objects.get()
    assert entry.action_flag == CHANGE
    assert "Every 15 minutes" in entry.change_message


def test_edit_under_another_name_moves_the_schedule(full: Client, now: datetime) -> None:
    alarm = alarms.schedule_recurring("tests.ok", rate=Hours(1), key="reports", name="")
    full.post(edit_url(alarm), recurring(every="15m"))
    old, new = Alarm.objects.get(pk=alarm.pk), Alarm.objects.exclude(pk=alarm.pk).get()
    assert old.state == "cancelled"
    assert (new.state, new.key, new.name) == ("scheduled", "reports", "daily")
    logged = {(entry.object_id, entry.action_flag) for entry in LogEntry.objects.all()}
    assert logged == {(str(new.pk), ADDITION), (str(old.pk), CHANGE)}


def test_edit_errors_change_nothing(full: Client, now: datetime) -> None:
    alarm = alarms.schedule_recurring("tests.ok", rate=Hours(1), key="reports", name="daily")
    before = Alarm.objects.values().get()
    errors(full.post(edit_url(alarm), recurring(every="5m", rate="Hours(2)")))
    errors(full.post(edit_url(alarm), recurring(every="5m", payload="[")))
    assert Alarm.objects.values().get() == before
    assert not LogEntry.objects.exists()


def test_edit_of_a_one_off_or_ended_alarm(full: Client, now: datetime) -> None:
    once = alarms.schedule("tests.ok", key="a", name="b")
    assert full.get(edit_url(once)).status_code == 404
    assert "Edit schedule" not in full.get(change_url(once)).content.decode()
    ended = alarms.schedule_recurring("tests.ok", rate=Hours(1), key="r", name="n")
    alarms.cancel(ended)
    response = full.get(edit_url(ended), follow=True)
    assert "can be edited" in messages_of(response)[0]
    assert "Edit schedule" not in full.get(change_url(ended)).content.decode()
    assert (
        full.get(reverse("admin:django_alarms_alarm_edit_schedule", args=["nope"])).status_code
        == 404
    )


# -- one-off alarms --------------------------------------------------------------------------


def test_add_one_off_at(full: Client, now: datetime) -> None:
    response = full.post(ADD_ONE_OFF, one_off(at="2026-10-21 09:30"), follow=True)
    alarm = Alarm.objects.get()
    assert alarm.due_at == datetime(2026, 10, 21, 9, 30, tzinfo=PARIS)
    assert alarm.recurrence is None
    assert (alarm.key, alarm.name, alarm.payload) == ("acc-7", "reminder", {"account": 7})
    assert LogEntry.objects.get().action_flag == ADDITION
    assert "next at 2026-10-21 09:30:00 CEST" in messages_of(response)[0]


def test_add_one_off_delay_or_now(full: Client, now: datetime) -> None:
    full.post(ADD_ONE_OFF, one_off(delay="1h", name="later"))
    full.post(ADD_ONE_OFF, one_off(name="", key=""))
    assert sorted(Alarm.objects.values_list("due_at", flat=True)) == [now, now + timedelta(hours=1)]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"payload": "{"}, "payload", "not valid JSON"),
        ({"handler": "tests.validated", "payload": "{}"}, "payload", "account"),
        ({"handler": "django_alarms.alarms.purge"}, "handler", "valid choice"),
        ({"at": "2026-10-21 09:30", "delay": "5m"}, "__all__", "not both"),
        ({"at": "tomorrow"}, "at", "not a date"),
        ({"delay": "a while"}, "delay", "not a duration"),
        ({"at": "9999-12-31 23:00+00:00"}, "at", "outside"),
    ],
)
def test_one_off_form_errors(
    full: Client, now: datetime, fields: dict[str, Any], field: str, words: str
) -> None:
    found = errors(full.post(ADD_ONE_OFF, one_off(**fields)))
    assert field in found, found
    assert any(words.lower() in message.lower() for message in found[field]), found
    nothing_written()


def test_one_off_clash_is_a_form_error(full: Client, now: datetime) -> None:
    alarms.schedule("tests.ok", key="acc-7", name="reminder")
    found = errors(full.post(ADD_ONE_OFF, one_off(delay="5m")))
    assert "already" in " ".join(found["__all__"]) or "exists" in " ".join(found["__all__"])
    assert Alarm.objects.count() == 1
    assert not LogEntry.objects.exists()


def test_forms_look_like_the_admin(full: Client, now: datetime) -> None:
    for url in (ADD_RECURRING, ADD_ONE_OFF):
        page = full.get(url).content.decode()
        assert 'class="module aligned"' in page
        assert 'class="submit-row"' in page
        assert "tests.ok" in page
    page = full.post(ADD_RECURRING, recurring(payload="{")).content.decode()
    assert 'class="errorlist' in page
    assert 'class="errornote"' in page
