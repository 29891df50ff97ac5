"""What the admin's lists and pages show of an alarm's time and history: hints that mean
something in each state, the effective timeout, what a worker serves, an alarm without
attempts, the history page's dates, and lateness (per attempt, and per handler on the
overview)."""

from __future__ import annotations

import html as html_module
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_alarms import clock
from django_alarms.admin import lateness
from django_alarms.models import Alarm
from django_alarms.templatetags.alarms_admin import alarm_hint
from django_alarms.templatetags.alarms_admin import lateness as lateness_text
from tests.factories import AlarmFactory, AttemptFactory
from tests.test_admin import ATTEMPTS, OVERVIEW, VIEW_ALL, change_url, changelist, client_for, staff

pytestmark = pytest.mark.django_db

UTC = dt_timezone.utc


@pytest.fixture
def now() -> Iterator[datetime]:
    moment = timezone.now().replace(microsecond=0)
    with clock.frozen(moment):
        yield moment


@pytest.fixture
def viewer(django_user_model: Any) -> Client:
    """A read-only support user: may look at alarms, attempts and workers, change nothing."""
    return client_for(staff(django_user_model, "viewer", *VIEW_ALL))


def field(html: str, name: str) -> str:
    """The text of the read-only field ``name`` of a change page, tags removed."""
    start = html.index('<div class="readonly">', html.index(f"field-{name}"))
    end = html.index("</div>", start)
    text = re.sub(r"<[^>]+>", "", html[start + len('<div class="readonly">') : end])
    return " ".join(html_module.unescape(text).replace("\xa0", " ").split())


def row_of(html: str, key: str) -> str:
    """The ``<tr>`` of the alarm list that shows ``key``."""
    index = html.index(f'title="{key}"')
    return html[html.rindex("<tr", 0, index) : html.index("</tr>", index)]


# -- hints -----------------------------------------------------------------------------------


def test_finished_alarms_say_when_they_finished_not_when_they_were_due(admin_client, now):
    AlarmFactory(key="failed", failed=True, due_at=now, finished_at=now - timedelta(minutes=3))
    AlarmFactory(key="succeeded", succeeded=True, due_at=now, finished_at=now)
    AlarmFactory(
        key="cancelled",
        cancelled=True,
        due_at=now + timedelta(hours=1, minutes=58),
        finished_at=now - timedelta(hours=2),
    )
    html = changelist(admin_client).content.decode()
    assert "finished 3 min ago" in row_of(html, "failed")
    assert "finished just now" in row_of(html, "succeeded")
    assert "finished 2 h ago" in row_of(html, "cancelled")
    for key in ("failed", "succeeded", "cancelled"):
        assert "due now" not in row_of(html, key)
        assert " in " not in row_of(html, key).split("alarms-relative", 1)[1]


def test_waiting_and_running_alarms_keep_their_hints(admin_client, now):
    AlarmFactory(key="soon", due_at=now + timedelta(minutes=5))
    AlarmFactory(key="late", due_at=now - timedelta(minutes=3))
    AlarmFactory(key="paused", paused=True, due_at=now + timedelta(hours=2))
    AlarmFactory(key="running", state="running", claimed_at=now - timedelta(seconds=12))
    html = changelist(admin_client).content.decode()
    assert "in 5 min" in row_of(html, "soon")
    assert "3 min late" in row_of(html, "late")
    assert "alarms-late" in row_of(html, "late")
    assert "in 2 h" in row_of(html, "paused")
    assert "running for 12 s" in row_of(html, "running")


def test_a_finished_alarm_without_an_end_time_shows_no_hint(now):
    alarm = AlarmFactory.build(state="failed", due_at=now, finished_at=None)
    assert alarm_hint(alarm, now) == ""


def test_the_page_of_a_finished_alarm_shows_its_due_time_plain_and_when_it_finished(
    admin_client, now
):
    alarm = AlarmFactory(
        cancelled=True,
        due_at=now + timedelta(hours=1, minutes=58),
        finished_at=now - timedelta(minutes=4),
    )
    html = admin_client.get(change_url(alarm)).content.decode()
    assert "(" not in field(html, "due_detail")
    assert field(html, "finished").endswith("(4 min ago)")
    waiting = AlarmFactory(due_at=now + timedelta(minutes=5))
    html = admin_client.get(change_url(waiting)).content.decode()
    assert field(html, "due_detail").endswith("(in 5 min)")
    assert field(html, "finished") == "-"


# -- the effective timeout -------------------------------------------------------------------


@override_settings(ALARMS={"TIMEOUT": 90})
def test_the_page_shows_the_effective_timeout_and_where_it_comes_from(admin_client, now):
    own = AlarmFactory(handler="tests.limited", timeout=2.5)
    handlers = AlarmFactory(handler="tests.limited")
    setting = AlarmFactory(handler="tests.ok")
    unknown = AlarmFactory(handler="gone.handler")

    def shown(alarm: Any) -> str:
        return field(admin_client.get(change_url(alarm)).content.decode(), "timeout_display")

    assert shown(own) == "2.5 s (the alarm's own)"
    assert shown(handlers) == "7 s (the handler's)"
    assert shown(setting) == "90 s (the TIMEOUT setting)"
    assert shown(unknown).startswith("90 s (the TIMEOUT setting: the handler is not registered")


# -- an alarm without attempts, and the history page -----------------------------------------


def test_an_alarm_without_attempts_says_so_instead_of_an_empty_table(admin_client, viewer, now):
    alarm = AlarmFactory()
    for client in (admin_client, viewer):
        html = client.get(change_url(alarm)).content.decode()
        assert "No attempts yet. A worker makes the first one when the alarm is due." in html
        assert "Attempts, newest first" not in html
        assert "field-number_link" not in html


def test_an_alarm_whose_attempts_were_purged_says_so(admin_client, now):
    alarm = AlarmFactory(failed=True, attempts=3)
    html = admin_client.get(change_url(alarm)).content.decode()
    assert "the 3 attempts of this alarm are older than the KEEP_ATTEMPTS setting" in html


def test_a_user_who_may_not_see_attempts_is_not_told_about_them(client, django_user_model, now):
    client.force_login(staff(django_user_model, "alarms-only", "view_alarm"))
    html = client.get(change_url(AlarmFactory())).content.decode()
    assert "No attempts yet" not in html


def test_an_alarm_with_attempts_shows_them_and_no_placeholder(admin_client, now):
    alarm = AlarmFactory(failed=True, attempts=1)
    AttemptFactory(alarm=alarm, number=1, outcome="error", error="RuntimeError: boom")
    html = admin_client.get(change_url(alarm)).content.decode()
    assert "Attempts, newest first" in html
    assert "No attempts yet" not in html


@override_settings(TIME_ZONE="Europe/Paris")
def test_the_history_page_writes_times_as_every_other_page(admin_client, admin_user):
    moment = datetime(2031, 3, 3, 8, 30, 5, tzinfo=UTC)
    with clock.frozen(moment):
        alarm = AlarmFactory(failed=True)
    LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(Alarm),
        object_id=str(alarm.pk),
        object_repr=str(alarm)[:200],
        action_flag=CHANGE,
        change_message="Retried now from the admin (was failed).",
        action_time=moment,
    )
    url = reverse("admin:django_alarms_alarm_history", args=[alarm.pk])
    html = admin_client.get(url).content.decode()
    assert "2031-03-03 09:30:05 CET" in html
    assert "Retried now from the admin (was failed)." in html
    untouched = AlarmFactory()
    html = admin_client.get(
        reverse("admin:django_alarms_alarm_history", args=[untouched.pk])
    ).content.decode()
    assert "Nobody has changed this alarm in the admin." in html


# -- lateness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0004, "0.4 ms"),
        (0.0012, "1.2 ms"),
        (0.3456, "345.6 ms"),
        (3.4, "3.4 s"),
        (125, "2 min 5 s"),
        (7260, "2 h 1 min"),
        (-0.002, "2.0 ms early"),
    ],
)
def test_lateness_is_written_for_its_size(seconds, text):
    assert lateness_text(seconds) == text


def test_percentiles_are_nearest_rank():
    values = [float(number) for number in range(1, 11)]
    assert lateness.percentile(values, 0.5) == 5
    assert lateness.percentile(values, 0.99) == 10
    assert lateness.percentile([7.0], 0.99) == 7


def late_attempt(alarm: Any, number: int, due_at: datetime, late: float, **fields: Any) -> Any:
    return AttemptFactory(
        alarm=alarm,
        number=number,
        handler=alarm.handler,
        due_at=due_at,
        started_at=due_at + timedelta(seconds=late),
        **fields,
    )


def test_each_attempt_shows_its_lateness_on_the_alarms_page_and_in_the_list(admin_client, now):
    alarm = AlarmFactory(failed=True, attempts=2)
    late_attempt(alarm, 1, now - timedelta(minutes=5), 0.0012, outcome="error")
    late_attempt(alarm, 2, now - timedelta(minutes=2), 3.4, outcome="error")
    AttemptFactory(alarm=alarm, number=3, due_at=None, started_at=now)  # written before 0004
    page = admin_client.get(change_url(alarm)).content.decode()
    listed = admin_client.get(reverse(ATTEMPTS)).content.decode()
    for html in (page, listed):
        assert "lateness" in html.lower()
        assert ">1.2 ms</span>" in html
        assert ">3.4 s</span>" in html
        assert "the time it was for" in html
    assert '<td class="field-lateness_display">-</td>' in listed


def test_the_overview_shows_lateness_per_handler_over_the_last_hour(admin_client, now):
    ok = AlarmFactory(handler="tests.ok", succeeded=True)
    for number, late in enumerate([0.001] * 98 + [0.002, 0.5], start=1):
        late_attempt(ok, number, now - timedelta(minutes=30), late)
    boom = AlarmFactory(handler="tests.boom", failed=True)
    late_attempt(boom, 1, now - timedelta(minutes=10), 4.0, outcome="error")
    late_attempt(boom, 2, now - timedelta(hours=2), 999.0, outcome="error")  # too old
    response = admin_client.get(reverse(OVERVIEW))
    rows = response.context["lateness_rows"]
    assert [
        (row["handler"], row["attempts"], row["p50"], row["p99"], row["worst"]) for row in rows
    ] == [
        ("tests.boom", 1, "4.0 s", "4.0 s", "4.0 s"),
        ("tests.ok", 100, "1.0 ms", "2.0 ms", "500.0 ms"),
    ]
    html = response.content.decode()
    assert "Lateness per handler, last hour" in html
    assert "Computed from the latest" not in html


def test_the_overview_reads_a_bounded_number_of_attempts_for_lateness(
    admin_client, now, monkeypatch
):
    monkeypatch.setattr(lateness, "MAX_LATENESS_ROWS", 5)
    monkeypatch.setattr(
        lateness.by_handler, "__kwdefaults__", {"period": timedelta(hours=1), "cap": 5}
    )
    alarm = AlarmFactory(handler="tests.ok", succeeded=True)
    for number in range(1, 9):
        # The 3 oldest are very late: the latest 5 read are not.
        late = 60.0 if number <= 3 else 0.001
        late_attempt(alarm, number, now - timedelta(minutes=40 - number), late)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(OVERVIEW))
    (row,) = response.context["lateness_rows"]
    assert row["attempts"] == 5
    assert row["worst"] == "1.0 ms"
    assert "Computed from the latest 5 attempts of the hour." in response.content.decode()
    (read,) = [
        query["sql"]
        for query in queries.captured_queries
        if connection.ops.quote_name("due_at") in query["sql"]
        and "alarms_attempt" in query["sql"]
        and "LIMIT" in query["sql"]
    ]
    assert "LIMIT 6" in read


def test_the_overview_shows_lateness_only_to_who_may_see_attempts(client, django_user_model, now):
    client.force_login(staff(django_user_model, "alarms-only", "view_alarm"))
    response = client.get(reverse(OVERVIEW))
    assert response.status_code == 200
    assert "Lateness per handler" not in response.content.decode()
