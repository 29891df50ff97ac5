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
from django.test import override_settings
from django.utils import timezone

from django_alarms import clock
from django_alarms.templatetags.alarms_admin import alarm_hint
from tests.factories import AlarmFactory
from tests.test_admin import change_url, changelist

pytestmark = pytest.mark.django_db

UTC = dt_timezone.utc


@pytest.fixture
def now() -> Iterator[datetime]:
    moment = timezone.now().replace(microsecond=0)
    with clock.frozen(moment):
        yield moment


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
