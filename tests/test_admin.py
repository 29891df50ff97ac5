"""The admin, through Django's test client: lists, filters, search, the alarm's page, actions
and buttons (with their permissions and skipped rows), the reschedule form, the overview,
escaping, and the number of queries of a long list."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_alarms import admin as alarms_admin
from django_alarms import alarms, clock
from django_alarms.admin import alarm as alarm_admin
from django_alarms.admin.operations import OPERATIONS
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.recurrence import Weekdays
from django_alarms.templatetags.alarms_admin import (
    MASK,
    duration,
    redact,
    relative_due,
    span,
)
from django_alarms.types import ALLOWED_FROM, State
from tests.factories import AlarmFactory, AttemptFactory

pytestmark = pytest.mark.django_db

UTC = dt_timezone.utc
CHANGELIST = "admin:django_alarms_alarm_changelist"
ATTEMPTS = "admin:django_alarms_attempt_changelist"
WORKERS = "admin:django_alarms_worker_changelist"
OVERVIEW = "admin:django_alarms_alarm_overview"
SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
VIEW_ALL = ("view_alarm", "view_attempt", "view_worker")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def now() -> Iterator[datetime]:
    """The clock of the services and of the admin, frozen on a whole second."""
    moment = timezone.now().replace(microsecond=0)
    with clock.frozen(moment):
        yield moment


def staff(django_user_model: Any, username: str, *codenames: str) -> Any:
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="django_alarms", codename__in=codenames)
    )
    return user


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(django_user_model: Any) -> Client:
    """A read-only support user: may look at alarms, attempts and workers, change nothing."""
    return client_for(staff(django_user_model, "viewer", *VIEW_ALL))


@pytest.fixture
def retrier(django_user_model: Any) -> Client:
    return client_for(staff(django_user_model, "retrier", *VIEW_ALL, "retry_alarm"))


@pytest.fixture
def nobody(django_user_model: Any) -> Client:
    """Staff, but without any permission on the alarms app."""
    return client_for(staff(django_user_model, "nobody"))


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def keys_in(response: Any) -> set[str]:
    return {alarm.key for alarm in response.context["cl"].result_list}


def changelist(client: Client, **params: Any) -> Any:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return response


CONFIRM = "admin/django_alarms/alarm/confirm.html"


def act(client: Client, action: str, alarms_: list[Alarm], *, url: str = "", **extra: Any) -> Any:
    """Choose ``action`` for ``alarms_`` on the list (at ``url``) and press *Go*; when the
    admin answers with its confirmation page, confirm what it lists, as an operator would."""
    url = url or reverse(CHANGELIST)
    data = {"action": action, "_selected_action": [str(alarm.pk) for alarm in alarms_]}
    data.update({"index": 0, **extra})
    response = client.post(url, data, follow=True)
    if response.status_code == 200 and CONFIRM in [t.name for t in response.templates]:
        confirmed = {
            "action": action,
            "_selected_action": response.context["selected"],
            "post": "yes",
        }
        response = client.post(url, confirmed, follow=True)
    return response


def reload(alarm: Alarm) -> Alarm:
    return Alarm.objects.get(pk=alarm.pk)


def change_url(alarm: Alarm) -> str:
    return reverse("admin:django_alarms_alarm_change", args=[alarm.pk])


def button_url(alarm: Alarm, name: str) -> str:
    return reverse(f"admin:django_alarms_alarm_{name}", args=[alarm.pk])


# -- the alarm list --------------------------------------------------------------------------


def test_the_list_shows_state_due_attempts_error_and_kind(admin_client, now):
    AlarmFactory(key="soon", name="reminder", due_at=now + timedelta(minutes=5))
    AlarmFactory(key="late", due_at=now - timedelta(minutes=3))
    AlarmFactory(
        key="broken",
        failed=True,
        max_attempts=5,
        last_error="ConnectionError: partner down\nmore detail",
    )
    alarms.schedule_recurring("tests.ok", every=timedelta(hours=1), key="every-hour")

    html = changelist(admin_client).content.decode()

    assert '<span class="alarms-badge alarms-state-scheduled">scheduled</span>' in html
    assert '<span class="alarms-badge alarms-state-failed">failed</span>' in html
    assert "in 5 min" in html
    assert "3 min late" in html
    assert "5/5" in html
    assert 'title="ConnectionError: partner down\nmore detail">ConnectionError: partner down<' in (
        html
    )
    assert "recurring" in html
    assert "one-off" in html
    assert "reminder" in html


def test_attempts_count_the_current_budget(admin_client, now):
    AlarmFactory(key="again", attempts=7, budget_start=5, max_attempts=3)
    assert "2/3" in changelist(admin_client).content.decode()


def test_the_state_filter(admin_client, now):
    AlarmFactory(key="waiting")
    AlarmFactory(key="broken", failed=True)
    AlarmFactory(key="done", succeeded=True)
    assert keys_in(changelist(admin_client, state__exact="failed")) == {"broken"}
    assert keys_in(changelist(admin_client)) == {"waiting", "broken", "done"}


def test_the_handler_filter_lists_registered_handlers_without_reading_the_table(admin_client, now):
    AlarmFactory(key="a", handler="tests.ok")
    AlarmFactory(key="b", handler="tests.boom")
    with CaptureQueriesContext(connection) as queries:
        response = changelist(admin_client)
    assert not [query for query in queries if "DISTINCT" in query["sql"].upper()]
    handler_filter = next(
        spec
        for spec in response.context["cl"].filter_specs
        if isinstance(spec, alarms_admin.HandlerFilter)
    )
    assert ("tests.ok", "tests.ok") in handler_filter.lookup_choices
    assert ("tests.limited", "tests.limited") in handler_filter.lookup_choices
    assert keys_in(changelist(admin_client, handler="tests.boom")) == {"b"}


def test_the_handler_filter_keeps_a_handler_that_is_not_registered(admin_client, now):
    AlarmFactory(key="gone", handler="old.handler")
    response = changelist(admin_client, handler="old.handler")
    assert keys_in(response) == {"gone"}
    assert "old.handler" in response.content.decode()


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("overdue", {"late"}),
        ("next_hour", {"soon"}),
        ("today", {"soon", "tonight"}),
        ("later", {"tomorrow"}),
    ],
)
def test_the_due_window_filter(admin_client, window, expected):
    # 10:00 in Paris, so that "tonight" is still today and "tomorrow" is not.
    morning = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
    with clock.frozen(morning):
        AlarmFactory(key="late", due_at=morning - timedelta(minutes=1))
        AlarmFactory(key="soon", due_at=morning + timedelta(minutes=30))
        AlarmFactory(key="tonight", due_at=morning + timedelta(hours=10))
        AlarmFactory(key="tomorrow", due_at=morning + timedelta(days=1))
        AlarmFactory(key="failed-late", failed=True, due_at=morning - timedelta(hours=1))
        assert keys_in(changelist(admin_client, due=window)) == expected


def test_the_kind_filter(admin_client, now):
    AlarmFactory(key="once")
    alarms.schedule_recurring("tests.ok", every=60, key="again")
    assert keys_in(changelist(admin_client, kind="one_off")) == {"once"}
    assert keys_in(changelist(admin_client, kind="recurring")) == {"again"}


def test_search_by_key_or_name(admin_client, now):
    AlarmFactory(key="account-7", name="reminder")
    AlarmFactory(key="account-8", name="invoice")
    assert keys_in(changelist(admin_client, q="count-7")) == {"account-7"}
    assert keys_in(changelist(admin_client, q="INVOICE")) == {"account-8"}


def test_search_by_id_is_an_exact_match(admin_client, now):
    wanted = AlarmFactory(key="wanted")
    AlarmFactory(key=str(wanted.pk))  # a key that contains the id does not match
    assert keys_in(changelist(admin_client, q=f" {wanted.pk} ")) == {"wanted"}


def test_the_date_hierarchy_drills_down_with_index_probes(admin_client):
    AlarmFactory(key="a", due_at=datetime(2031, 3, 3, 12, tzinfo=UTC))
    AlarmFactory(key="b", due_at=datetime(2031, 5, 9, 12, tzinfo=UTC))
    AlarmFactory(key="c", due_at=datetime(2033, 1, 1, 12, tzinfo=UTC), failed=True)

    with CaptureQueriesContext(connection) as queries:
        years = changelist(admin_client).content.decode()
    assert not [query for query in queries if "DISTINCT" in query["sql"].upper()]
    assert "?due_at__year=2031" in years
    assert "?due_at__year=2033" in years
    assert "?due_at__year=2032" not in years

    months = changelist(admin_client, due_at__year=2031).content.decode()
    assert "due_at__month=3" in months
    assert "due_at__month=5" in months
    assert "due_at__month=4" not in months

    days = changelist(admin_client, due_at__year=2031, due_at__month=3)
    assert "due_at__day=3" in days.content.decode()
    assert keys_in(days) == {"a"}

    # Filtered by state, the hierarchy offers the dates of that state only.
    failed = changelist(admin_client, state__exact="failed").content.decode()
    assert "2033" in failed
    assert "due_at__year=2031" not in failed


def test_a_date_that_does_not_exist_shows_no_hierarchy(admin_client, now):
    AlarmFactory(key="a")
    response = admin_client.get(
        reverse(CHANGELIST), {"due_at__year": 2031, "due_at__month": 2, "due_at__day": 30}
    )
    assert response.status_code in (200, 302)  # Django reports the bad lookup with ?e=1


def sorted_keys(response: Any) -> list[str]:
    return [alarm.key for alarm in response.context["cl"].result_list]


def due_header(response: Any) -> str:
    """The classes of the due column's header: Django's arrow is ``sorted ascending``."""
    html = response.content.decode()
    start = html.index('class="sortable column-due')
    return html[start : html.index('"', start + 7)]


def test_the_list_sorts_soonest_first_with_an_arrow_that_says_so(admin_client, now):
    AlarmFactory(key="in-12-days", due_at=now + timedelta(days=12))
    AlarmFactory(key="in-3-s", due_at=now + timedelta(seconds=3))
    AlarmFactory(key="paused", paused=True, due_at=now + timedelta(hours=1))
    AlarmFactory(key="late", due_at=now - timedelta(minutes=3))
    for params in ({}, {"state__exact": "scheduled"}, {"due": "next_hour"}):
        response = changelist(admin_client, **params)
        assert "sorted ascending" in due_header(response)
    assert sorted_keys(changelist(admin_client)) == ["late", "in-3-s", "paused", "in-12-days"]
    assert sorted_keys(changelist(admin_client, state__exact="scheduled")) == [
        "late",
        "in-3-s",
        "in-12-days",
    ]
    paused = changelist(admin_client, state__exact="paused")
    assert sorted_keys(paused) == ["paused"]
    assert "sorted ascending" in due_header(paused)


def test_a_list_of_alarms_that_stopped_waiting_sorts_latest_first(admin_client, now):
    AlarmFactory(key="old", failed=True, due_at=now - timedelta(days=2))
    AlarmFactory(key="new", failed=True, due_at=now - timedelta(hours=1))
    response = changelist(admin_client, state__exact="failed")
    assert sorted_keys(response) == ["new", "old"]
    assert "sorted descending" in due_header(response)


def test_the_due_header_reverses_the_order(admin_client, now):
    AlarmFactory(key="soon", due_at=now + timedelta(minutes=1))
    AlarmFactory(key="later", due_at=now + timedelta(minutes=2))
    column = alarm_admin.AlarmAdmin.list_display.index("due") + 1  # after the checkbox
    response = changelist(admin_client, o=f"-{column}")
    assert sorted_keys(response) == ["later", "soon"]
    assert "sorted descending" in due_header(response)


def test_a_list_of_1000_alarms_takes_as_many_queries_as_a_list_of_one(
    admin_client, now, django_assert_max_num_queries
):
    AlarmFactory(key="one", failed=True)
    with CaptureQueriesContext(connection) as small:
        changelist(admin_client)
    Alarm.objects.bulk_create(
        Alarm(
            handler="tests.ok",
            key=f"bulk-{index}",
            payload={"index": index},
            state=("scheduled", "failed", "succeeded")[index % 3],
            due_at=now + timedelta(minutes=index),
            max_attempts=5,
            last_error="RuntimeError: boom" if index % 3 == 1 else "",
        )
        for index in range(999)
    )
    with django_assert_max_num_queries(len(small)) as large:
        response = changelist(admin_client)
    assert len(response.context["cl"].result_list) == 50
    with django_assert_max_num_queries(len(small)):
        changelist(admin_client, state__exact="failed")
    with django_assert_max_num_queries(len(small)):
        changelist(admin_client, due="next_hour", handler="tests.ok", q="bulk")
    # No count of the whole table: every COUNT stops at the paginator's cap.
    counts = [query["sql"] for query in large.captured_queries if "COUNT(" in query["sql"]]
    assert counts
    assert all("LIMIT" in sql for sql in counts)


def test_the_count_stops_at_the_cap(admin_client, now, monkeypatch):
    monkeypatch.setattr(alarms_admin.CappedPaginator, "cap", 10)
    Alarm.objects.bulk_create(
        Alarm(handler="tests.ok", key=f"k{index}", due_at=now, max_attempts=1)
        for index in range(12)
    )
    response = changelist(admin_client, state__exact="scheduled")
    assert "More than 10 alarms" in response.content.decode()
    assert response.context["cl"].result_count == 10


def test_a_long_unfiltered_list_shows_the_table_estimate_where_there_is_one(
    admin_client, now, monkeypatch
):
    monkeypatch.setattr(alarms_admin.CappedPaginator, "cap", 3)
    monkeypatch.setattr(alarms_admin.selectors, "estimated_row_count", lambda model, using: 10**6)
    Alarm.objects.bulk_create(
        Alarm(handler="tests.ok", key=f"k{index}", due_at=now, max_attempts=1) for index in range(5)
    )
    assert "About 1,000,000 alarms" in changelist(admin_client).content.decode()
    # The estimate is the whole table's: a filtered list says what it counted.
    filtered = changelist(admin_client, state__exact="scheduled").content.decode()
    assert "More than 3 alarms" in filtered


def test_a_short_list_is_counted_exactly_whatever_the_estimate(admin_client, now, monkeypatch):
    monkeypatch.setattr(alarms_admin.selectors, "estimated_row_count", lambda model, using: 10**6)
    AlarmFactory(key="a")
    AlarmFactory(key="b")
    html = changelist(admin_client).content.decode()
    assert "2 alarms" in html
    assert "About" not in html


# -- the alarm's page ------------------------------------------------------------------------


def test_the_page_shows_the_payload_as_json_with_secrets_masked(admin_client, now):
    alarm = AlarmFactory(
        payload={
            "account": 7,
            "Password": "hunter2",
            # Secrets that cannot occur by chance in the page (a random id, a CSRF token).
            "nested": {"api_token": "tok-Qv9z", "list": [{"client_SECRET": "s3cr3t-Wx"}, "plain"]},
            "Authorization": {"scheme": "Bearer-Kp7", "value": "xyz-Jd4"},
        }
    )
    html = admin_client.get(change_url(alarm)).content.decode()
    assert '<pre class="alarms-json">' in html
    assert "&quot;account&quot;: 7" in html
    for secret in ("hunter2", "tok-Qv9z", "s3cr3t-Wx", "xyz-Jd4", "Bearer-Kp7"):
        assert secret not in html
    assert html.count(MASK) == 4
    assert "plain" in html


def test_the_page_shows_the_attempts_newest_first_with_tracebacks(admin_client, now):
    alarm = AlarmFactory(failed=True, attempts=2)
    AttemptFactory(
        alarm=alarm,
        number=1,
        outcome="error",
        started_at=now - timedelta(minutes=2),
        error="RuntimeError: first",
        traceback="Traceback (most recent call last):\n  first frame",
        worker="host-a:1",
    )
    AttemptFactory(
        alarm=alarm,
        number=2,
        outcome="timeout",
        started_at=now - timedelta(minutes=1),
        finished_at=now - timedelta(minutes=1) + timedelta(seconds=1.5),
        error="TimeoutError: too slow",
        traceback="Traceback (most recent call last):\n  second frame",
        worker="host-b:2",
    )
    html = admin_client.get(change_url(alarm)).content.decode()
    assert html.index("TimeoutError: too slow") < html.index("RuntimeError: first")
    assert (
        '<details class="alarms-traceback"><summary>TimeoutError: too slow</summary>'
        "<pre>Traceback (most recent call last):\n  second frame</pre></details>"
    ) in html
    assert '<span class="alarms-badge alarms-outcome-timeout">timeout</span>' in html
    assert "1.5 s" in html
    assert "host-b:2" in html


def test_a_long_history_shows_the_latest_attempts_and_links_to_all(admin_client, now):
    alarm = AlarmFactory(failed=True, attempts=25)
    Attempt.objects.bulk_create(
        Attempt(
            alarm=alarm,
            number=number,
            outcome="error",
            started_at=now - timedelta(minutes=30 - number),
            handler=alarm.handler,
            error=f"RuntimeError: attempt {number}",
        )
        for number in range(1, 26)
    )
    response = admin_client.get(change_url(alarm))
    html = response.content.decode()
    assert "RuntimeError: attempt 25" in html
    assert "RuntimeError: attempt 6<" in html
    assert "RuntimeError: attempt 5<" not in html
    all_url = reverse(ATTEMPTS) + f"?alarm={alarm.pk}"
    assert f'<a href="{all_url}">See all 25 attempts of this alarm</a>' in html

    attempts = admin_client.get(all_url)
    assert attempts.context["cl"].result_count == 25
    assert str(alarm) in attempts.content.decode()


def test_a_recurring_alarm_shows_its_schedule_and_next_occurrences(admin_client):
    start = datetime(2031, 3, 3, 6, 0, tzinfo=UTC)  # a Monday
    with clock.frozen(start):
        alarm = alarms.schedule_recurring(
            "tests.ok", rate=Weekdays(17, 0), timezone="America/New_York", key="report"
        )
        html = admin_client.get(change_url(alarm)).content.decode()
    assert "At 17:00, Monday through Friday (America/New_York)" in html
    for day in ("03", "04", "05", "06", "07"):
        assert f"2031-03-{day} 17:00:00 EST" in html
        assert f"2031-03-{day} 22:00:00 UTC" in html
    assert "2031-03-10" not in html  # five occurrences, not more
    assert "America/New_York</th><th>UTC</th>" in html


def test_nothing_can_be_added_edited_or_deleted(admin_client, now):
    alarm = AlarmFactory(key="evidence", payload={"a": 1})
    assert admin_client.get(reverse("admin:django_alarms_alarm_add")).status_code == 403
    admin_client.post(change_url(alarm), {"key": "tampered", "state": "succeeded"})
    assert reload(alarm).key == "evidence"
    # Django's delete page is the button that deletes failed and cancelled alarms only.
    delete = reverse("admin:django_alarms_alarm_delete", args=[alarm.pk])
    response = admin_client.post(delete, {"post": "yes"}, follow=True)
    assert messages_of(response) == [
        "Skipped 1 scheduled alarm: only failed or cancelled alarms can be deleted."
    ]
    assert Alarm.objects.filter(pk=alarm.pk).exists()
    attempt = AttemptFactory(alarm=alarm)
    attempt_delete = reverse("admin:django_alarms_attempt_delete", args=[attempt.pk])
    assert admin_client.post(attempt_delete, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:django_alarms_attempt_add")).status_code == 403
    assert admin_client.get(reverse("admin:django_alarms_worker_add")).status_code == 403
    response = changelist(admin_client)
    assert "delete_selected" not in response.content.decode()


# -- actions ---------------------------------------------------------------------------------


def test_retry_retries_failed_and_cancelled_alarms_and_skips_the_rest(
    admin_client, admin_user, now
):
    failed = AlarmFactory(key="failed", failed=True)
    cancelled = AlarmFactory(key="cancelled", cancelled=True)
    done = AlarmFactory(key="done", succeeded=True)
    waiting = AlarmFactory(key="waiting", due_at=now + timedelta(hours=1))

    response = act(admin_client, "retry_now", [failed, cancelled, done, waiting])

    assert messages_of(response) == [
        "Retried 1 failed alarm and 1 cancelled alarm: they are scheduled again, due now.",
        "Skipped 1 scheduled alarm and 1 succeeded alarm: only failed or cancelled alarms can "
        "be retried.",
    ]
    assert reload(failed).state == reload(cancelled).state == "scheduled"
    assert reload(failed).due_at == now
    assert reload(failed).budget_start == 5
    assert reload(done).state == "succeeded"
    assert reload(waiting).due_at == now + timedelta(hours=1)
    entries = LogEntry.objects.order_by("object_repr")
    assert [(entry.object_id, entry.action_flag, entry.user) for entry in entries] == sorted(
        [
            (str(cancelled.pk), CHANGE, admin_user),
            (str(failed.pk), CHANGE, admin_user),
        ],
        key=lambda row: str(Alarm.objects.get(pk=row[0])),
    )
    assert {entry.change_message for entry in entries} == {
        "Retried now from the admin (was failed).",
        "Retried now from the admin (was cancelled).",
    }


def test_one_alarm_is_reported_in_the_singular(admin_client, now):
    failed = AlarmFactory(failed=True)
    done = AlarmFactory(succeeded=True)
    assert messages_of(act(admin_client, "retry_now", [failed, done])) == [
        "Retried 1 failed alarm: it is scheduled again, due now.",
        "Skipped 1 succeeded alarm: only failed or cancelled alarms can be retried.",
    ]


def test_run_now_makes_scheduled_alarms_due_now(admin_client, now):
    waiting = AlarmFactory(due_at=now + timedelta(days=1))
    failed = AlarmFactory(failed=True)
    response = act(admin_client, "run_now", [waiting, failed])
    assert messages_of(response) == [
        "Made 1 scheduled alarm due now: a worker delivers it at once.",
        "Skipped 1 failed alarm: only scheduled alarms can be run now.",
    ]
    assert reload(waiting).due_at == now
    assert reload(failed).state == "failed"
    (entry,) = LogEntry.objects.all()
    assert entry.change_message.startswith("Made due now from the admin (was due at ")


def test_cancel_cancels_scheduled_failed_and_paused_alarms(admin_client, admin_user, now):
    waiting = AlarmFactory()
    failed = AlarmFactory(failed=True)
    paused = AlarmFactory(paused=True)
    running = AlarmFactory(state="running")
    response = act(admin_client, "cancel_alarms", [waiting, failed, paused, running])
    assert messages_of(response) == [
        "Cancelled 1 scheduled alarm, 1 failed alarm and 1 paused alarm.",
        "Skipped 1 running alarm: only scheduled, failed or paused alarms can be cancelled.",
    ]
    for alarm in (waiting, failed, paused):
        cancelled = reload(alarm)
        assert cancelled.state == "cancelled"
        assert cancelled.cancel_reason == f"cancelled in the admin by {admin_user}"
    assert reload(running).state == "running"
    assert LogEntry.objects.count() == 3


def test_an_alarm_the_service_refuses_is_skipped_with_the_reason(admin_client, now):
    old = AlarmFactory(key="acc-7", name="reminder", failed=True)
    active = AlarmFactory(key="acc-7", name="reminder")
    response = act(admin_client, "retry_now", [old])
    (message,) = messages_of(response)
    assert message == (
        f"Skipped 1 alarm that could not be changed: alarm {active.pk}, scheduled, holds the "
        "same key and name: cancel it first"
    )
    assert reload(old).state == "failed"
    assert not LogEntry.objects.exists()


def test_an_action_on_too_many_alarms_changes_nothing(admin_client, now, monkeypatch):
    monkeypatch.setattr(alarm_admin, "MAX_ACTION_ROWS", 2)
    rows = [AlarmFactory(failed=True) for _ in range(3)]
    response = act(admin_client, "retry_now", rows)
    assert messages_of(response) == [
        "Nothing was changed: more than 2 alarms are selected. Narrow the list with filters "
        "and act on at most 2 alarms at a time."
    ]
    assert {reload(alarm).state for alarm in rows} == {"failed"}


def test_select_across_acts_on_the_filtered_list(admin_client, now):
    failed = [AlarmFactory(failed=True) for _ in range(3)]
    other = AlarmFactory(cancelled=True)
    response = act(
        admin_client,
        "retry_now",
        failed[:1],
        url=reverse(CHANGELIST) + "?state__exact=failed",
        select_across=1,
    )
    assert messages_of(response) == ["Retried 3 failed alarms: they are scheduled again, due now."]
    assert reload(other).state == "cancelled"


def test_a_read_only_user_sees_no_action_and_cannot_post_one(viewer, now):
    failed = AlarmFactory(failed=True)
    response = viewer.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert response.context["action_form"] is None
    assert "retry_now" not in response.content.decode()
    act(viewer, "retry_now", [failed])
    assert reload(failed).state == "failed"
    assert not LogEntry.objects.exists()


def test_each_action_needs_its_own_permission(retrier, now):
    failed = AlarmFactory(failed=True)
    waiting = AlarmFactory(due_at=now + timedelta(hours=1))
    form = retrier.get(reverse(CHANGELIST)).context["action_form"]
    assert [name for name, _label in form.fields["action"].choices] == ["", "retry_now"]

    response = act(retrier, "cancel_alarms", [waiting])
    assert messages_of(response) == ["No action selected."]
    assert reload(waiting).state == "scheduled"

    act(retrier, "retry_now", [failed])
    assert reload(failed).state == "scheduled"


# -- reschedule ------------------------------------------------------------------------------


def test_reschedule_asks_for_the_new_time_first(admin_client, now):
    waiting = AlarmFactory(key="waiting")
    done = AlarmFactory(key="done", succeeded=True)
    response = act(admin_client, "reschedule_alarms", [waiting, done])
    html = response.content.decode()
    assert response.templates[0].name == "admin/django_alarms/alarm/reschedule.html"
    assert 'name="at"' in html
    assert "1 of them cannot be rescheduled" in html
    assert html.count('name="_selected_action"') == 2
    assert reload(waiting).due_at == waiting.due_at


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("2031-03-03 09:30", "has no UTC offset"),
        ("tomorrow at nine", "is not a date and time"),
        ("2031-02-30 09:30+01:00", "is not a date and time"),
        ("", "This field is required."),
    ],
)
def test_reschedule_rejects_a_naive_or_unparseable_time(admin_client, now, value, error):
    waiting = AlarmFactory()
    response = act(admin_client, "reschedule_alarms", [waiting], apply="yes", at=value)
    assert error in response.content.decode()
    assert response.context["form"].errors["at"]
    assert reload(waiting).due_at == waiting.due_at
    assert not LogEntry.objects.exists()


def test_reschedule_moves_the_eligible_alarms(admin_client, admin_user, now):
    waiting = AlarmFactory()
    failed = AlarmFactory(failed=True)
    running = AlarmFactory(state="running")
    response = act(
        admin_client,
        "reschedule_alarms",
        [waiting, failed, running],
        apply="yes",
        at="2031-03-03 09:30+01:00",
    )
    new_time = datetime(2031, 3, 3, 8, 30, tzinfo=UTC)
    assert messages_of(response) == [
        "Rescheduled 1 scheduled alarm and 1 failed alarm.",
        "Skipped 1 running alarm: only scheduled, paused, failed or cancelled alarms can be "
        "rescheduled.",
    ]
    assert reload(waiting).due_at == new_time
    assert reload(failed).state == "scheduled"
    assert reload(failed).due_at == new_time
    assert reload(running).state == "running"
    messages = sorted(LogEntry.objects.values_list("change_message", flat=True))
    assert messages[0].startswith("Rescheduled from the admin to 2031-03-03 09:30:00 CET (was ")


# -- the buttons of an alarm's page ----------------------------------------------------------


def test_the_page_offers_the_buttons_that_apply(admin_client, now):
    failed = AlarmFactory(failed=True)
    html = admin_client.get(change_url(failed)).content.decode()
    # Retry, cancel and delete ask first: links to their confirmation pages.
    assert f'href="{button_url(failed, "retry")}"' in html
    assert f'href="{button_url(failed, "cancel")}"' in html
    assert f'href="{button_url(failed, "delete")}"' in html
    assert f'href="{button_url(failed, "reschedule")}"' in html
    assert button_url(failed, "run") not in html
    assert button_url(failed, "pause") not in html

    waiting = AlarmFactory()
    html = admin_client.get(change_url(waiting)).content.decode()
    # Run now and pause act at once: forms that post, with their CSRF token.
    assert f'action="{button_url(waiting, "run")}"' in html
    assert f'action="{button_url(waiting, "pause")}"' in html
    assert "csrfmiddlewaretoken" in html
    assert button_url(waiting, "retry") not in html
    assert button_url(waiting, "delete") not in html


@pytest.mark.parametrize("state", list(State))
def test_the_buttons_and_messages_follow_the_table_of_allowed_states(admin_client, now, state):
    alarm = AlarmFactory(state=state)
    html = admin_client.get(change_url(alarm)).content.decode()
    for name, operation in OPERATIONS.items():
        allowed = operation.eligible
        if name != "delete":
            assert allowed == ALLOWED_FROM[operation.service]
        assert (button_url(alarm, name) in html) == (state in allowed), name
        named = operation.refused.partition(" alarms can be ")[0]
        assert {other for other in State if other in named} == set(allowed), name


def test_the_buttons_follow_the_permissions(viewer, retrier, now):
    failed = AlarmFactory(failed=True)
    assert "alarms-buttons" not in viewer.get(change_url(failed)).content.decode()
    html = retrier.get(change_url(failed)).content.decode()
    assert button_url(failed, "retry") in html
    assert button_url(failed, "cancel") not in html


def confirm_button(client: Client, alarm: Alarm, name: str) -> Any:
    """Press the button ``name`` of the alarm's page, and confirm on the page it opens."""
    page = client.get(button_url(alarm, name))
    assert page.status_code == 200
    assert CONFIRM in [template.name for template in page.templates]
    return client.post(button_url(alarm, name), {"post": "yes"})


def test_the_retry_button_asks_then_retries(admin_client, admin_user, now):
    failed = AlarmFactory(failed=True)
    page = admin_client.get(button_url(failed, "retry"))
    assert "Retry this alarm now?" in page.content.decode()
    assert reload(failed).state == "failed"
    response = admin_client.post(button_url(failed, "retry"), {"post": "yes"})
    assert response.status_code == 302
    assert response.url == change_url(failed)
    assert messages_of(response) == ["Retried 1 failed alarm: it is scheduled again, due now."]
    assert reload(failed).state == "scheduled"
    (entry,) = LogEntry.objects.all()
    assert entry.user == admin_user
    assert entry.object_id == str(failed.pk)


def test_a_button_post_without_the_confirmation_only_asks(admin_client, now):
    waiting = AlarmFactory()
    response = admin_client.post(button_url(waiting, "cancel"))
    assert response.status_code == 200
    assert "Cancel this alarm?" in response.content.decode()
    assert reload(waiting).state == "scheduled"


def test_the_run_and_cancel_buttons(admin_client, now):
    waiting = AlarmFactory(due_at=now + timedelta(days=2))
    admin_client.post(button_url(waiting, "run"))
    assert reload(waiting).due_at == now
    confirm_button(admin_client, waiting, "cancel")
    assert reload(waiting).state == "cancelled"


def test_a_button_on_an_alarm_it_does_not_apply_to_changes_nothing(admin_client, now):
    done = AlarmFactory(succeeded=True)
    page = admin_client.get(button_url(done, "retry")).content.decode()
    assert "Nothing to do: only failed or cancelled alarms can be retried" in page
    assert "Yes, retry" not in page
    response = admin_client.post(button_url(done, "retry"), {"post": "yes"}, follow=True)
    assert messages_of(response) == [
        "Skipped 1 succeeded alarm: only failed or cancelled alarms can be retried."
    ]
    assert reload(done).state == "succeeded"
    response = admin_client.post(button_url(done, "run"), follow=True)
    assert messages_of(response) == [
        "Skipped 1 succeeded alarm: only scheduled alarms can be run now."
    ]


def test_buttons_take_post_only_with_csrf_and_permission(viewer, retrier, admin_user, now):
    failed = AlarmFactory(failed=True)
    waiting = AlarmFactory()
    assert retrier.get(button_url(failed, "retry")).status_code == 200  # the confirmation
    assert reload(failed).state == "failed"
    assert viewer.get(button_url(failed, "retry")).status_code == 403
    assert viewer.post(button_url(failed, "retry"), {"post": "yes"}).status_code == 403
    assert retrier.post(button_url(failed, "cancel"), {"post": "yes"}).status_code == 403
    assert retrier.get(button_url(failed, "cancel")).status_code == 403
    assert reload(failed).state == "failed"
    assert client_for(admin_user).get(button_url(waiting, "run")).status_code == 405

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.post(button_url(failed, "retry"), {"post": "yes"}).status_code == 403
    assert strict.post(button_url(waiting, "run")).status_code == 403
    assert reload(failed).state == "failed"

    missing = reverse("admin:django_alarms_alarm_retry", args=[uuid.uuid4()])
    assert retrier.post(missing).status_code == 404


def test_the_reschedule_button_opens_a_form_with_the_current_time(admin_client, now):
    waiting = AlarmFactory(due_at=datetime(2031, 3, 3, 8, 30, 15, tzinfo=UTC))
    response = admin_client.get(button_url(waiting, "reschedule"))
    assert response.status_code == 200
    assert 'value="2031-03-03 09:30:15+01:00"' in response.content.decode()

    response = admin_client.post(button_url(waiting, "reschedule"), {"at": "03/03/2031"})
    assert response.status_code == 200
    assert response.context["form"].errors["at"]

    response = admin_client.post(button_url(waiting, "reschedule"), {"at": "2031-04-01T10:00Z"})
    assert response.status_code == 302
    assert response.url == change_url(waiting)
    assert reload(waiting).due_at == datetime(2031, 4, 1, 10, tzinfo=UTC)
    assert LogEntry.objects.count() == 1


def test_the_reschedule_button_needs_the_permission(retrier, now):
    waiting = AlarmFactory()
    assert retrier.get(button_url(waiting, "reschedule")).status_code == 403
    response = retrier.post(button_url(waiting, "reschedule"), {"at": "2031-04-01T10:00Z"})
    assert response.status_code == 403
    assert reload(waiting).due_at == waiting.due_at


# -- attempts and workers --------------------------------------------------------------------


def test_the_attempt_list_and_its_filters(viewer, now):
    alarm = AlarmFactory(key="acc-7", handler="tests.boom")
    other = AlarmFactory(key="acc-8", handler="tests.ok")
    AttemptFactory(alarm=alarm, number=1, outcome="error", error="RuntimeError: boom")
    AttemptFactory(alarm=other, number=1, outcome="ok", started_at=now - timedelta(days=10))
    url = reverse(ATTEMPTS)

    response = viewer.get(url)
    html = response.content.decode()
    assert response.context["cl"].result_count == 2
    assert '<span class="alarms-badge alarms-outcome-error">error</span>' in html
    # The alarm by its key (the handler has its own column), whole in the tooltip.
    assert (
        f'<a class="alarms-label" href="{change_url(alarm)}" title="tests.boom acc-7">acc-7</a>'
    ) in html
    assert "RuntimeError: boom" in html

    def numbers(**params: Any) -> set[str]:
        found = viewer.get(url, params).context["cl"].result_list
        return {attempt.alarm.key for attempt in found}

    assert numbers(outcome__exact="ok") == {"acc-8"}
    assert numbers(handler="tests.boom") == {"acc-7"}
    assert numbers(started_at__gte=(now - timedelta(days=1)).isoformat()) == {"acc-7"}
    assert numbers(alarm=str(other.pk)) == {"acc-8"}
    assert numbers(q=str(alarm.pk)) == {"acc-7"}
    assert numbers(q="boom") == {"acc-7"}


def test_the_attempt_page_shows_the_whole_traceback_escaped(viewer, now):
    attempt = AttemptFactory(outcome="error", error=SCRIPT, traceback=f"Traceback\n{SCRIPT}")
    response = viewer.get(reverse("admin:django_alarms_attempt_change", args=[attempt.pk]))
    html = response.content.decode()
    assert f"Traceback\n{ESCAPED}" in html
    assert SCRIPT not in html


def test_the_attempt_list_takes_a_fixed_number_of_queries(
    admin_client, now, django_assert_max_num_queries
):
    AttemptFactory()
    with CaptureQueriesContext(connection) as small:
        admin_client.get(reverse(ATTEMPTS))
    alarm = AlarmFactory()
    Attempt.objects.bulk_create(
        Attempt(alarm=alarm, number=number, outcome="ok", started_at=now, handler="tests.ok")
        for number in range(1, 200)
    )
    with django_assert_max_num_queries(len(small)):
        admin_client.get(reverse(ATTEMPTS))


def test_workers_are_listed_alive_or_dead(viewer, now):
    Worker.objects.create(
        name="alive-1",
        hostname="host-a",
        pid=11,
        executor="inline",
        started_at=now - timedelta(hours=1),
        heartbeat_at=now - timedelta(seconds=5),
        in_flight=3,
    )
    Worker.objects.create(
        name="dead-1",
        hostname="host-b",
        pid=12,
        executor="django_q",
        started_at=now - timedelta(hours=2),
        heartbeat_at=now - timedelta(minutes=5),
    )
    url = reverse(WORKERS)
    html = viewer.get(url).content.decode()
    assert '<span class="alarms-badge alarms-alive">alive</span>' in html
    assert '<span class="alarms-badge alarms-dead">dead</span>' in html
    assert "host-a" in html
    assert "django_q" in html
    assert "3 of 1" in html  # in flight, of the concurrency
    alive = viewer.get(url, {"alive": "yes"}).context["cl"].result_list
    assert [worker.name for worker in alive] == ["alive-1"]
    dead = viewer.get(url, {"alive": "no"}).context["cl"].result_list
    assert [worker.name for worker in dead] == ["dead-1"]
    worker = Worker.objects.get(name="alive-1")
    change = reverse("admin:django_alarms_worker_change", args=[worker.pk])
    viewer.post(change, {"name": "renamed"})
    assert Worker.objects.filter(name="alive-1").exists()


def test_a_workers_page_says_what_it_serves_all_when_started_without_a_choice(viewer, now):
    times = {"started_at": now, "heartbeat_at": now}
    everything = Worker.objects.create(name="w1", hostname="h", pid=1, executor="inline", **times)
    chosen = Worker.objects.create(
        name="w2",
        hostname="h",
        pid=2,
        executor="inline",
        handlers=["tests.ok", "probe"],
        queues=["emails"],
        **times,
    )

    def shown(worker, label):
        page = viewer.get(reverse("admin:django_alarms_worker_change", args=[worker.pk]))
        html = page.content.decode()
        start = html.index('<div class="readonly">', html.index(f"<label>{label}:</label>"))
        return html[start + len('<div class="readonly">') : html.index("</div>", start)]

    assert shown(everything, "Handlers") == "all registered"
    assert shown(everything, "Queues") == "all"
    assert shown(chosen, "Handlers") == "tests.ok, probe"
    assert shown(chosen, "Queues") == "emails"


# -- the overview ----------------------------------------------------------------------------


def test_the_overview(admin_client, now):
    hour = now.replace(minute=0, second=0)
    AlarmFactory(key="soon", due_at=hour + timedelta(hours=2, minutes=10))
    AlarmFactory(key="soon-too", due_at=hour + timedelta(hours=2, minutes=20))
    AlarmFactory(key="oldest", handler="tests.boom", due_at=now - timedelta(minutes=42))
    AlarmFactory(key="late", due_at=now - timedelta(minutes=1))
    AlarmFactory(failed=True, handler="tests.boom")
    AttemptFactory(
        alarm=AlarmFactory(succeeded=True, handler="tests.boom"),
        outcome="error",
        handler="tests.boom",
        started_at=now - timedelta(hours=1),
        error="ConnectionError: partner down",
    )
    AttemptFactory(alarm=AlarmFactory(succeeded=True), started_at=now - timedelta(hours=1))
    AttemptFactory(alarm=AlarmFactory(succeeded=True), started_at=now - timedelta(hours=3))

    response = admin_client.get(reverse(OVERVIEW))
    assert response.status_code == 200
    html = response.content.decode()
    states = {item["state"]: item["count"].value for item in response.context["states"]}
    assert states == {
        "scheduled": 4,
        "running": 0,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 0,
        "paused": 0,
    }
    assert response.context["overdue"].value == 2
    assert response.context["oldest"].key == "oldest"
    assert "42 min late" in html

    coming = response.context["coming"]
    assert [bar.total for bar in coming.bars][:4] == [0, 0, 2, 0]
    assert len(coming.bars) == 24
    assert "<svg" in html
    assert 'class="alarms-fill-scheduled"' in html

    happened = response.context["happened"]
    assert len(happened.bars) == 24
    assert happened.bars[-2].total == 2
    assert {segment.series for segment in happened.bars[-2].segments} == {"ok", "error"}
    assert dict((name, total) for name, _label, total in happened.legend) == {
        "ok": 2,
        "retry": 0,
        "error": 1,
        "timeout": 0,
        "lost": 0,
    }
    assert 'class="alarms-fill-error"' in html
    assert "hour (Europe/Paris)" in html

    # A bar opens the alarms or the attempts of its hour.
    assert keys_in(admin_client.get(coming.bars[2].link)) == {"soon", "soon-too"}
    hour_of_attempts = admin_client.get(happened.bars[-2].link).context["cl"]
    assert {attempt.outcome for attempt in hour_of_attempts.result_list} == {"ok", "error"}

    (failing,) = response.context["failing"]
    assert failing["handler"] == "tests.boom"
    assert failing["failures"] == 1
    assert failing["error"] == "ConnectionError: partner down"


def test_the_overview_of_an_empty_system(admin_client, now):
    html = admin_client.get(reverse(OVERVIEW)).content.decode()
    assert "Nothing is overdue" in html
    assert "No alarm is due in the next 24 hours." in html
    assert "No attempt in the last 24 hours." in html
    assert "No handler failed in the last 24 hours." in html


def test_the_overview_is_linked_from_the_app_index_and_the_list(admin_client):
    url = reverse(OVERVIEW)
    app = admin_client.get(reverse("admin:app_list", args=["django_alarms"])).content.decode()
    assert f'href="{url}"' in app
    assert f'href="{url}"' in changelist(admin_client).content.decode()


def test_the_overview_shows_only_what_the_user_may_see(django_user_model, now):
    AttemptFactory(outcome="error", error="secret failure")
    alarms_only = client_for(staff(django_user_model, "alarms-only", "view_alarm"))
    response = alarms_only.get(reverse(OVERVIEW))
    assert response.status_code == 200
    assert "happened" not in response.context
    assert "secret failure" not in response.content.decode()
    assert "workers" not in response.context


def test_the_overview_takes_a_fixed_number_of_queries(
    admin_client, now, django_assert_max_num_queries
):
    with CaptureQueriesContext(connection) as empty:
        admin_client.get(reverse(OVERVIEW))
    Alarm.objects.bulk_create(
        Alarm(handler="tests.ok", due_at=now + timedelta(minutes=index), max_attempts=1)
        for index in range(300)
    )
    with django_assert_max_num_queries(len(empty)):
        admin_client.get(reverse(OVERVIEW))


# -- permissions and escaping ----------------------------------------------------------------


def test_a_user_without_view_permission_sees_nothing(nobody, now):
    alarm = AlarmFactory(failed=True)
    attempt = AttemptFactory(alarm=alarm)
    for url in (
        reverse(CHANGELIST),
        change_url(alarm),
        reverse(OVERVIEW),
        button_url(alarm, "reschedule"),
        reverse(ATTEMPTS),
        reverse("admin:django_alarms_attempt_change", args=[attempt.pk]),
        reverse(WORKERS),
    ):
        assert nobody.get(url).status_code == 403, url
    assert nobody.post(button_url(alarm, "retry")).status_code == 403
    assert reload(alarm).state == "failed"
    index = nobody.get(reverse("admin:index"))
    assert "django_alarms" not in index.content.decode()


def test_anonymous_users_are_sent_to_the_login_page(client, now):
    alarm = AlarmFactory(failed=True)
    for url in (reverse(OVERVIEW), button_url(alarm, "retry"), reverse(CHANGELIST)):
        response = client.post(url) if url.endswith("/retry/") else client.get(url)
        assert response.status_code == 302
        assert reverse("admin:login") in response.url
    assert reload(alarm).state == "failed"


def test_html_in_keys_payloads_and_errors_is_escaped(admin_client, now):
    alarm = AlarmFactory(
        key=SCRIPT,
        name=SCRIPT,
        handler="tests.ok",
        payload={"note": SCRIPT, SCRIPT: 1},
        failed=True,
        last_error=SCRIPT,
    )
    AttemptFactory(alarm=alarm, outcome="error", error=SCRIPT, traceback=SCRIPT, worker=SCRIPT)
    Worker.objects.create(
        name=SCRIPT,
        hostname=SCRIPT,
        pid=1,
        executor="inline",
        started_at=now,
        heartbeat_at=now,
    )
    pages = [
        changelist(admin_client),
        admin_client.get(change_url(alarm)),
        admin_client.get(reverse(ATTEMPTS)),
        admin_client.get(reverse(WORKERS)),
        admin_client.get(reverse(OVERVIEW)),
        act(admin_client, "reschedule_alarms", [alarm]),
        admin_client.post(button_url(alarm, "retry"), follow=True),
    ]
    for response in pages:
        html = response.content.decode()
        assert SCRIPT not in html, response.request["PATH_INFO"]
    assert ESCAPED in pages[0].content.decode()
    assert ESCAPED in pages[1].content.decode()


# -- how things are written ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "state", "text"),
    [
        (timedelta(minutes=5), "scheduled", "in 5 min"),
        (timedelta(minutes=-3), "scheduled", "3 min late"),
        (timedelta(seconds=-42), "paused", "due 42 s ago"),
        (timedelta(hours=-2), "succeeded", "2 h ago"),
        (timedelta(hours=2, minutes=5), "scheduled", "in 2 h 5 min"),
        (timedelta(days=3, hours=4), "scheduled", "in 3 days 4 h"),
        (timedelta(days=1), "scheduled", "in 1 day"),
        (timedelta(days=40), "scheduled", "in 40 days"),
        (timedelta(milliseconds=300), "scheduled", "due now"),
    ],
)
def test_relative_due_times(delta, state, text):
    now = datetime(2031, 3, 3, 9, tzinfo=UTC)
    assert relative_due(now + delta, state, now) == text


def test_spans_and_durations():
    assert span(timedelta(seconds=59)) == "59 s"
    assert span(timedelta(hours=3)) == "3 h"
    assert duration(None) == "-"
    assert duration(0.0123) == "12 ms"
    assert duration(1.5) == "1.5 s"
    assert duration(125) == "2 min 5 s"


def test_redaction_is_case_insensitive_nested_and_configurable(settings):
    payload = {"user": {"PassWord": "x", "tokens": ["a"]}, "items": [{"apiKey": 1}], "ok": 2}
    assert redact(payload) == {
        "user": {"PassWord": MASK, "tokens": MASK},
        "items": [{"apiKey": MASK}],
        "ok": 2,
    }
    settings.ALARMS = {"REDACT_KEYS": ["iban"]}
    assert redact({"IBAN_number": "FR76", "password": "visible"}) == {
        "IBAN_number": MASK,
        "password": "visible",
    }
    assert redact(["plain", 1, None]) == ["plain", 1, None]


def test_the_queue_filter_lists_the_configured_queues_and_the_page_shows_queue_and_priority(
    admin_client, now
):
    AlarmFactory(key="plain", handler="tests.ok")
    task = alarms.schedule("tests.ok", {}, key="mail", queue="emails", priority=7)
    with CaptureQueriesContext(connection) as queries:
        response = changelist(admin_client)
    assert not [query for query in queries if "DISTINCT" in query["sql"].upper()]
    queue_filter = next(
        spec
        for spec in response.context["cl"].filter_specs
        if isinstance(spec, alarms_admin.QueueFilter)
    )
    assert queue_filter.lookup_choices == [("default", "default"), ("emails", "emails")]
    assert keys_in(changelist(admin_client, queue="emails")) == {"mail"}
    page = admin_client.get(reverse("admin:django_alarms_alarm_change", args=[task.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "emails" in body
    assert ">7<" in body.replace(" ", "").replace("\n", "")


def test_a_task_alarm_shows_its_path_and_arguments_and_actions_work_on_it(admin_client, now):
    from tests.workerapp import tasks as task_defs

    result = task_defs.echo.using(run_after=now + timedelta(hours=1)).enqueue("hi", n=2)
    page = admin_client.get(reverse("admin:django_alarms_alarm_change", args=[result.id]))
    body = page.content.decode()
    assert "tests.workerapp.tasks.echo" in body
    assert "&quot;hi&quot;" in body or '"hi"' in body
    listing = changelist(admin_client)
    assert [alarm.handler for alarm in listing.context["cl"].result_list] == [
        "tests.workerapp.tasks.echo"
    ]
    act(admin_client, "run_now", [Alarm.objects.get(pk=result.id)])
    assert Alarm.objects.get(pk=result.id).due_at <= timezone.now()
