"""``alarms_cancel``, ``alarms_retry``, ``alarms_pause``, ``alarms_resume``: selection, dry run,
counts, and every change made through the service layer."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from django_alarms import clock
from django_alarms.models import Alarm
from django_alarms.signals import alarm_cancelled
from django_alarms.testing import AlarmFactory
from django_alarms.types import State

pytestmark = pytest.mark.django_db


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def states() -> dict[str, str]:
    return {str(pk): state for pk, state in Alarm.objects.values_list("pk", "state")}


@pytest.fixture
def site():
    now = clock.now()
    return {
        "a": AlarmFactory(handler="tests.ok", key="acct-1", name="reminder"),
        "b": AlarmFactory(handler="tests.ok", key="acct-1", name="digest"),
        "c": AlarmFactory(handler="probe"),
        "failed": AlarmFactory(handler="tests.ok", failed=True),
        "done": AlarmFactory(handler="tests.ok", succeeded=True, finished_at=now),
        "running": AlarmFactory(
            handler="tests.ok", state=State.RUNNING, lease_until=now + timedelta(minutes=5)
        ),
    }


def test_a_dry_run_lists_and_counts_and_changes_nothing(site):
    before = states()
    text = run("alarms_cancel", "--handler", "tests.ok", "--dry-run")
    assert text.startswith(
        "would cancel 4 alarm(s) (1 failed, 1 running, 2 scheduled) (dry run: nothing changed)"
    )
    assert str(site["a"].id) in text
    assert states() == before
    report = json.loads(
        run("alarms_cancel", "--handler", "tests.ok", "--state", "succeeded", "--dry-run", "--json")
    )
    assert report["would_change"] == {}
    assert report["would_skip"] == {"succeeded": 1}


def test_cancel_goes_through_the_service_layer_and_counts_what_it_did(site):
    sent = []

    def receiver(sender, alarm, **kwargs):
        sent.append(alarm.pk)

    alarm_cancelled.connect(receiver)
    try:
        text = run("alarms_cancel", "--handler", "tests.ok")
    finally:
        alarm_cancelled.disconnect(receiver)
    assert text.startswith("cancelled 3 alarm(s) (1 failed, 2 scheduled)")
    assert "cancel requested of 1 running" in text
    now = states()
    assert {now[str(site[n].id)] for n in ("a", "b", "failed")} == {"cancelled"}
    assert now[str(site["c"].id)] == "scheduled"
    assert Alarm.objects.get(pk=site["running"].pk).cancel_requested
    assert set(sent) >= {site["a"].pk, site["b"].pk, site["failed"].pk}


def test_key_and_name_select_one_and_ids_select_those(site):
    run("alarms_pause", "--key", "acct-1", "--name", "digest")
    assert Alarm.objects.get(pk=site["b"].pk).state == "paused"
    assert Alarm.objects.get(pk=site["a"].pk).state == "scheduled"
    text = run("alarms_resume", "--id", str(site["b"].id))
    assert text.startswith("resumed 1 alarm(s) (1 paused)")
    assert Alarm.objects.get(pk=site["b"].pk).state == "scheduled"


def test_a_state_the_change_does_not_apply_from_is_skipped_and_said(site):
    report = json.loads(
        run(
            "alarms_retry",
            "--handler",
            "tests.ok",
            "--state",
            "failed",
            "--state",
            "succeeded",
            "--json",
        )
    )
    assert report["changed"] == {"failed": 1}
    assert report["skipped"] == {"succeeded": 1}
    assert Alarm.objects.get(pk=site["failed"].pk).state == "scheduled"
    assert Alarm.objects.get(pk=site["done"].pk).state == "succeeded"


def test_since_selects_the_recently_created(site):
    Alarm.objects.filter(pk=site["c"].pk).update(created_at=clock.now() - timedelta(days=2))
    assert run("alarms_pause", "--since", "1h").startswith("paused 2 alarm(s)")
    assert Alarm.objects.get(pk=site["c"].pk).state == "scheduled"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "select the alarms"),
        (["--name", "digest"], "give --key too"),
        (["--id", "nope"], "is not an alarm id"),
        (["--state", "sleeping"], "is not a state"),
        (["--since", "later"], "is not a length of time"),
    ],
)
def test_bad_selections_are_errors_that_change_nothing(site, args, message):
    before = states()
    with pytest.raises(CommandError, match=message):
        run("alarms_cancel", *args)
    assert states() == before
