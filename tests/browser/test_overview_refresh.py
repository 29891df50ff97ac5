"""The overview refreshes itself when the operator asks: its content is fetched again and
swapped in place (no reload of the page around it), the choice is remembered, the chart bars
stay links."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from django_alarms.models import Alarm

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def test_the_overview_refreshes_in_place_every_10_s_once_asked(
    live_server: Any, page: Any, artifacts: Path, django_user_model: Any
) -> None:
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    now = timezone.now()
    for minutes in (5, 65, 125):
        Alarm.objects.create(handler="send_reminder", due_at=now + timedelta(minutes=minutes),
                             max_attempts=5)  # fmt: skip
    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    overview = live_server.url + reverse("admin:django_alarms_alarm_overview")
    page.goto(overview)
    scheduled = page.locator(".alarms-card-scheduled .alarms-card-count")
    expect(scheduled).to_have_text("3")
    assert page.locator("#alarms-refresh").input_value() == "0"
    page.evaluate("window.notReloaded = true")

    page.select_option("#alarms-refresh", "10")
    Alarm.objects.create(handler="send_reminder", due_at=now + timedelta(minutes=7), max_attempts=5)
    expect(scheduled).to_have_text("4", timeout=25_000)
    # Swapped in place: the page itself was not loaded again, and the new content still has
    # the interval chosen and bars that link to the alarms they count.
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#alarms-refresh").input_value() == "10"
    assert page.locator("a.alarms-bar[href*='due_at__gte']").count() > 0
    page.screenshot(path=str(artifacts / "admin-overview-refresh.png"))

    # Remembered in this browser; "off" stops it.
    page.goto(overview)
    assert page.locator("#alarms-refresh").input_value() == "10"
    page.select_option("#alarms-refresh", "0")
    page.evaluate("window.notReloaded = true")
    Alarm.objects.create(handler="send_reminder", due_at=now + timedelta(minutes=8), max_attempts=5)
    page.wait_for_timeout(11_000)
    expect(scheduled).to_have_text("4")
