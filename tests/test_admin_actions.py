"""The admin's confirmation pages, the pause, resume and delete actions and buttons, each
permission level (view only, change, delete, all), the admin log, the messages, and the
service function behind deleting (``alarms.delete_finished``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_alarms import alarms, clock
from django_alarms.exceptions import InvalidAlarm
from django_alarms.models import Alarm, Attempt
from tests.factories import AlarmFactory, AttemptFactory
from tests.test_admin import (
    CHANGELIST,
    CONFIRM,
    VIEW_ALL,
    act,
    button_url,
    change_url,
    client_for,
    messages_of,
    reload,
    staff,
)

pytestmark = pytest.mark.django_db

ACTIONS = [
    "retry_now",
    "run_now",
    "pause_alarms",
    "resume_alarms",
    "reschedule_alarms",
    "cancel_alarms",
    "delete_alarms",
]


@pytest.fixture
def now() -> Iterator[datetime]:
    moment = timezone.now().replace(microsecond=0)
    with clock.frozen(moment):
        yield moment


@pytest.fixture
def viewer(django_user_model: Any) -> Client:
    return client_for(staff(django_user_model, "viewer", *VIEW_ALL))


@pytest.fixture
def changer(django_user_model: Any) -> Client:
    """Django's *change* permission: pause and resume, nothing else."""
    return client_for(staff(django_user_model, "changer", *VIEW_ALL, "change_alarm"))


@pytest.fixture
def deleter(django_user_model: Any) -> Client:
    """Django's *delete* permission: deleting failed and cancelled alarms, nothing else."""
    return client_for(staff(django_user_model, "deleter", *VIEW_ALL, "delete_alarm"))


def offered(client: Client) -> list[str]:
    form = client.get(reverse(CHANGELIST)).context["action_form"]
    return [] if form is None else [name for name, _label in form.fields["action"].choices][1:]


def ask(client: Client, action: str, rows: list[Alarm], **extra: Any) -> Any:
    """Press *Go* for ``action`` without confirming: the confirmation page."""
    data = {"action": action, "_selected_action": [str(alarm.pk) for alarm in rows], "index": 0}
    response = client.post(reverse(CHANGELIST), {**data, **extra})
    assert response.status_code == 200
    assert CONFIRM in [template.name for template in response.templates]
    return response


def section(html: str, title: str) -> str:
    """The table under the heading ``title`` of a confirmation page."""
    start = html.index(f"<h2>{title}</h2>")
    return html[start : html.index("</table>", start)]


# -- the permission levels -------------------------------------------------------------------


def test_each_permission_level_offers_its_actions(viewer, changer, deleter, admin_client):
    assert offered(viewer) == []
    assert offered(changer) == ["pause_alarms", "resume_alarms"]
    assert offered(deleter) == ["delete_alarms"]
    assert offered(admin_client) == ACTIONS


@pytest.mark.parametrize("action", ACTIONS)
def test_a_view_only_user_can_neither_ask_nor_act(viewer, now, action):
    rows = [AlarmFactory(), AlarmFactory(failed=True), AlarmFactory(paused=True)]
    before = {alarm.pk: alarm.state for alarm in rows}
    response = act(viewer, action, rows)
    assert CONFIRM not in [template.name for template in response.templates]
    confirmed = {"action": action, "_selected_action": list(before), "post": "yes"}
    viewer.post(reverse(CHANGELIST), confirmed)
    assert {alarm.pk: reload(alarm).state for alarm in rows} == before
    assert not LogEntry.objects.exists()


def test_a_change_only_user_pauses_and_resumes_and_nothing_else(changer, now):
    waiting = AlarmFactory(due_at=now + timedelta(hours=1))
    failed = AlarmFactory(failed=True)
    assert messages_of(act(changer, "pause_alarms", [waiting])) == [
        "Paused 1 scheduled alarm: it is not delivered until it is resumed."
    ]
    assert reload(waiting).state == "paused"
    for action in ("cancel_alarms", "retry_now", "delete_alarms", "run_now"):
        assert messages_of(act(changer, action, [failed, waiting])) == ["No action selected."]
    assert reload(failed).state == "failed"
    assert changer.get(button_url(failed, "delete")).status_code == 403
    assert changer.post(button_url(failed, "cancel"), {"post": "yes"}).status_code == 403
    assert changer.post(button_url(waiting, "resume")).status_code == 302
    assert reload(waiting).state == "scheduled"


def test_a_delete_only_user_deletes_and_nothing_else(deleter, now):
    failed = AlarmFactory(failed=True)
    waiting = AlarmFactory()
    assert messages_of(act(deleter, "cancel_alarms", [waiting])) == ["No action selected."]
    assert deleter.post(button_url(waiting, "pause")).status_code == 403
    assert reload(waiting).state == "scheduled"
    assert messages_of(act(deleter, "delete_alarms", [failed])) == [
        "Deleted 1 failed alarm, with 0 attempts."
    ]
    assert not Alarm.objects.filter(pk=failed.pk).exists()


# -- confirmation pages ----------------------------------------------------------------------


def test_cancel_asks_first_listing_what_changes_and_what_is_skipped(admin_client, now):
    waiting = AlarmFactory(key="waiting")
    paused = AlarmFactory(key="paused", paused=True)
    done = AlarmFactory(key="done", succeeded=True)
    html = ask(admin_client, "cancel_alarms", [waiting, paused, done]).content.decode()
    assert "Cancel these 3 alarms?" in html
    assert "Will change: 1 scheduled alarm and 1 paused alarm." in html
    assert "Will skip: 1 succeeded alarm." in html
    changing = section(html, "Will change")
    assert "waiting" in changing
    assert "paused" in changing
    assert "done" not in changing
    skipped = section(html, "Will be skipped")
    assert "done" in skipped
    assert "Only scheduled, failed or paused alarms can be cancelled" in skipped
    assert 'value="Yes, cancel 2 alarms"' in html
    assert html.count('name="_selected_action"') == 3
    assert 'name="post" value="yes"' in html
    # Nothing has happened yet.
    assert reload(waiting).state == "scheduled"
    assert reload(paused).state == "paused"
    assert not LogEntry.objects.exists()


def test_retry_of_a_cancelled_alarm_says_so_before_it_happens(admin_client, admin_user, now):
    cancelled = AlarmFactory(key="acc-7", name="reminder", cancelled=True, max_attempts=3)
    cancelled.cancel_reason = "cancelled in the admin by ada"
    cancelled.save(update_fields=["cancel_reason"])
    html = ask(admin_client, "retry_now", [cancelled]).content.decode()
    changing = section(html, "Will change")
    assert "scheduled again, due now, with a fresh budget of 3 attempts" in changing
    assert "it was cancelled (cancelled in the admin by ada)" in changing


def test_a_retry_the_service_would_refuse_is_shown_as_skipped_first(admin_client, now):
    """Select all, Retry: an alarm whose key and name another active alarm holds, and the
    second of two cancelled alarms with the same key and name, are listed as skipped."""
    old = AlarmFactory(key="acc-7", name="reminder", failed=True, due_at=now - timedelta(days=2))
    active = AlarmFactory(key="acc-7", name="reminder")
    first = AlarmFactory(key="acc-8", name="reminder", cancelled=True, due_at=now - timedelta(2))
    second = AlarmFactory(key="acc-8", name="reminder", cancelled=True, due_at=now)
    response = ask(admin_client, "retry_now", [old, active, first, second])
    html = response.content.decode()
    skipped = section(html, "Will be skipped")
    assert f"Alarm {active.pk}, scheduled, holds the same key and name: cancel it first" in (
        skipped
    )
    assert f"Alarm {first.pk}, selected too, has the same key and name and goes first" in skipped
    assert "Only failed or cancelled alarms can be retried" in skipped  # the active one
    assert 'value="Yes, retry 1 alarm"' in html

    response = act(admin_client, "retry_now", [old, active, first, second])
    assert messages_of(response)[0] == (
        "Retried 1 cancelled alarm: it is scheduled again, due now."
    )
    assert reload(first).state == "scheduled"
    assert reload(old).state == "failed"
    assert reload(second).state == "cancelled"


def test_the_confirmation_of_select_all_lists_each_alarm_it_will_change(admin_client, now):
    failed = [AlarmFactory(failed=True) for _ in range(3)]
    AlarmFactory()  # not in the filtered list
    url = reverse(CHANGELIST) + "?state__exact=failed"
    data = {"action": "retry_now", "_selected_action": [str(failed[0].pk)], "select_across": 1}
    response = admin_client.post(url, {**data, "index": 0})
    assert sorted(response.context["selected"]) == sorted(str(alarm.pk) for alarm in failed)
    assert "Retry these 3 alarms now?" in response.content.decode()


def test_what_changed_after_the_confirmation_is_reported_not_done(admin_client, now):
    failed = AlarmFactory(failed=True)
    gone = AlarmFactory(failed=True)
    selected = ask(admin_client, "retry_now", [failed, gone]).context["selected"]
    alarms.retry(failed)  # someone else was faster
    Alarm.objects.filter(pk=gone.pk).delete()
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "retry_now", "_selected_action": selected, "post": "yes"},
        follow=True,
    )
    assert messages_of(response) == [
        "1 selected alarm is no longer in the list (deleted, or out of its filters now) and was "
        "left alone.",
        "Skipped 1 scheduled alarm: only failed or cancelled alarms can be retried.",
    ]


def test_going_back_from_a_confirmation_changes_nothing(admin_client, now):
    waiting = AlarmFactory()
    response = ask(admin_client, "cancel_alarms", [waiting])
    assert response.context["back_url"] == reverse(CHANGELIST)
    assert reload(waiting).state == "scheduled"


def test_a_confirmation_shows_no_payload(admin_client, now):
    secret = AlarmFactory(failed=True, payload={"password": "hunter2", "note": "plain-Qz7"})
    html = ask(admin_client, "delete_alarms", [secret]).content.decode()
    assert "hunter2" not in html
    assert "plain-Qz7" not in html


def test_an_action_on_a_list_with_a_lookup_it_does_not_offer_is_refused(admin_client, now):
    secret = AlarmFactory(failed=True, payload={"password": "hunter2"})
    url = reverse(CHANGELIST) + "?payload__password__startswith=h"
    data = {"action": "delete_alarms", "_selected_action": [str(secret.pk)], "post": "yes"}
    assert admin_client.post(url, data).status_code == 400
    assert Alarm.objects.filter(pk=secret.pk).exists()


# -- pause and resume ------------------------------------------------------------------------


def test_pause_and_resume_through_the_service_with_log_entries(admin_client, admin_user, now):
    soon = AlarmFactory(key="soon", due_at=now + timedelta(hours=1))
    late = AlarmFactory(key="late", due_at=now - timedelta(minutes=5))
    running = AlarmFactory(key="running", state="running")
    assert messages_of(act(admin_client, "pause_alarms", [soon, late, running])) == [
        "Paused 2 scheduled alarms: they are not delivered until they are resumed.",
        "Skipped 1 running alarm: only scheduled alarms can be paused.",
    ]
    assert reload(soon).state == reload(late).state == "paused"
    html = ask(admin_client, "resume_alarms", [soon, late]).content.decode()
    assert "scheduled, due at once (it was due at" in html
    assert "scheduled, due at 20" in html  # the one due in an hour keeps its time
    assert messages_of(act(admin_client, "resume_alarms", [soon, late])) == [
        "Resumed 2 paused alarms: they are scheduled again."
    ]
    assert reload(soon).due_at == now + timedelta(hours=1)
    assert reload(late).state == "scheduled"
    entries = LogEntry.objects.filter(action_flag=CHANGE, user=admin_user)
    assert sorted(entry.change_message.split(" (")[0] for entry in entries) == [
        "Paused from the admin",
        "Paused from the admin",
        "Resumed from the admin",
        "Resumed from the admin",
    ]


def test_a_recurring_alarm_resumed_goes_to_its_next_occurrence(admin_client, now):
    report = alarms.schedule_recurring("tests.ok", every=timedelta(minutes=10), key="report")
    alarms.pause(report)
    with clock.frozen(now + timedelta(minutes=25)):
        html = ask(admin_client, "resume_alarms", [report]).content.decode()
        assert "scheduled at its next occurrence after now" in html
        act(admin_client, "resume_alarms", [report])
    assert reload(report).due_at == now + timedelta(minutes=30)


def test_the_pause_and_resume_buttons_act_at_once(admin_client, now):
    waiting = AlarmFactory(due_at=now + timedelta(hours=1))
    html = admin_client.get(change_url(waiting)).content.decode()
    assert f'action="{button_url(waiting, "pause")}"' in html
    response = admin_client.post(button_url(waiting, "pause"))
    assert response.url == change_url(waiting)
    assert reload(waiting).state == "paused"
    html = admin_client.get(change_url(waiting)).content.decode()
    assert f'action="{button_url(waiting, "resume")}"' in html
    admin_client.post(button_url(waiting, "resume"))
    assert reload(waiting).state == "scheduled"


# -- delete ----------------------------------------------------------------------------------


def test_delete_removes_failed_and_cancelled_alarms_with_their_attempts(
    admin_client, admin_user, now
):
    failed = AlarmFactory(key="failed", failed=True)
    cancelled = AlarmFactory(key="cancelled", cancelled=True)
    for number in (1, 2):
        AttemptFactory(alarm=failed, number=number, outcome="error")
    AttemptFactory(alarm=cancelled, number=1)
    keep = {
        "scheduled": AlarmFactory(key="scheduled"),
        "running": AlarmFactory(key="running", state="running"),
        "paused": AlarmFactory(key="paused", paused=True),
        "succeeded": AlarmFactory(key="succeeded", succeeded=True),
    }
    rows = [failed, cancelled, *keep.values()]
    html = ask(admin_client, "delete_alarms", rows).content.decode()
    assert "Delete these 6 alarms and their attempts?" in html
    assert "deleted, with its attempts (2 attempts)" in html
    assert "cannot be brought back" in html
    assert "Will skip: 1 scheduled alarm, 1 running alarm, 1 succeeded alarm and 1 paused" in html

    response = act(admin_client, "delete_alarms", rows)
    assert messages_of(response) == [
        "Deleted 1 failed alarm and 1 cancelled alarm, with 3 attempts.",
        "Skipped 1 scheduled alarm, 1 running alarm, 1 succeeded alarm and 1 paused alarm: "
        "only failed or cancelled alarms can be deleted.",
    ]
    assert not Alarm.objects.filter(pk__in=[failed.pk, cancelled.pk]).exists()
    assert not Attempt.objects.filter(alarm_id__in=[failed.pk, cancelled.pk]).exists()
    assert {alarm.pk for alarm in keep.values()} == set(Alarm.objects.values_list("pk", flat=True))
    entries = LogEntry.objects.filter(action_flag=DELETION)
    assert {(entry.object_id, entry.user_id) for entry in entries} == {
        (str(failed.pk), admin_user.pk),
        (str(cancelled.pk), admin_user.pk),
    }
    assert {entry.change_message.split(",")[0] for entry in entries} == {
        "Deleted from the admin (was failed",
        "Deleted from the admin (was cancelled",
    }


def test_the_delete_button_asks_then_deletes_and_goes_back_to_the_list(deleter, now):
    failed = AlarmFactory(failed=True)
    html = deleter.get(change_url(failed)).content.decode()
    assert f'href="{button_url(failed, "delete")}"' in html
    page = deleter.get(button_url(failed, "delete")).content.decode()
    assert "Delete this alarm and its attempts?" in page
    assert Alarm.objects.filter(pk=failed.pk).exists()
    response = deleter.post(button_url(failed, "delete"), {"post": "yes"})
    assert response.url == reverse(CHANGELIST)
    assert messages_of(response) == ["Deleted 1 failed alarm, with 0 attempts."]
    assert not Alarm.objects.filter(pk=failed.pk).exists()
    assert LogEntry.objects.get().action_flag == DELETION


def test_the_delete_button_never_deletes_an_alarm_that_waits_or_runs(admin_client, now):
    for state in ("scheduled", "running", "paused", "succeeded"):
        alarm = AlarmFactory(state=state)
        assert (
            button_url(alarm, "delete") not in admin_client.get(change_url(alarm)).content.decode()
        )
        response = admin_client.post(button_url(alarm, "delete"), {"post": "yes"})
        assert response.url == change_url(alarm)
        assert Alarm.objects.filter(pk=alarm.pk).exists()
    assert not LogEntry.objects.exists()


def test_an_alarm_retried_between_the_confirmation_and_the_delete_is_kept(admin_client, now):
    failed = AlarmFactory(failed=True)
    selected = ask(admin_client, "delete_alarms", [failed]).context["selected"]
    alarms.retry(failed)
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "delete_alarms", "_selected_action": selected, "post": "yes"},
        follow=True,
    )
    assert messages_of(response) == [
        "Skipped 1 scheduled alarm: only failed or cancelled alarms can be deleted."
    ]
    assert Alarm.objects.filter(pk=failed.pk).exists()


# -- the service: alarms.delete_finished -----------------------------------------------------


def test_delete_finished_deletes_finished_alarms_and_their_attempts_only(now):
    finished = [
        AlarmFactory(failed=True),
        AlarmFactory(cancelled=True),
        AlarmFactory(succeeded=True),
    ]
    waiting = [AlarmFactory(), AlarmFactory(state="running"), AlarmFactory(paused=True)]
    for alarm in finished + waiting:
        AttemptFactory(alarm=alarm, number=1)
    ids = [alarm.pk for alarm in finished + waiting]
    assert alarms.delete_finished([*ids, str(ids[0])]) == 3
    assert set(Alarm.objects.values_list("pk", flat=True)) == {alarm.pk for alarm in waiting}
    assert set(Attempt.objects.values_list("alarm_id", flat=True)) == {
        alarm.pk for alarm in waiting
    }


def test_delete_finished_takes_states_and_ignores_unknown_ids(now):
    import uuid

    failed = AlarmFactory(failed=True)
    done = AlarmFactory(succeeded=True)
    assert alarms.delete_finished([done, uuid.uuid4()], states=["failed", "cancelled"]) == 0
    assert alarms.delete_finished([failed.pk, done.pk], states=["failed"]) == 1
    assert Alarm.objects.filter(pk=done.pk).exists()
    assert alarms.delete_finished([]) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"alarms": [], "states": ["scheduled"]}, "only finished alarms are deleted"),
        ({"alarms": [], "states": []}, "must name at least one state"),
        ({"alarms": "not-a-list"}, "must be an iterable of alarms or ids"),
        ({"alarms": ["not-a-uuid"]}, "is not an alarm id"),
    ],
)
def test_delete_finished_rejects_bad_input(now, arguments, message):
    with pytest.raises(InvalidAlarm, match=message):
        alarms.delete_finished(**arguments)


def test_delete_finished_takes_at_most_its_maximum(now, monkeypatch):
    monkeypatch.setattr(alarms, "MAX_DELETE", 2)
    failed = [AlarmFactory(failed=True) for _ in range(3)]
    with pytest.raises(InvalidAlarm, match="at most 2 at a time"):
        alarms.delete_finished(failed)
    assert Alarm.objects.count() == 3
