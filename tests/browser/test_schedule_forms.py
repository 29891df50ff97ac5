"""The admin's schedule forms in a real browser at laptop widths with the sidebar open: the
recurring form with its preview across a DST change, the one-off form, an error shown on its
field; each pictured (``admin-schedule-*-1440x900.png`` are the docs' pictures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from django_alarms.models import Alarm
from tests.browser.test_admin_browser import LAPTOPS, PASSWORD, only_the_example_handlers

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FITS = """() => {
    // Every field, label and preview cell inside the content area.
    const area = document.querySelector('#content').getBoundingClientRect();
    const out = [];
    for (const el of document.querySelectorAll('#content form input, #content form select,'
            + ' #content form textarea, #content label, .alarms-preview td')) {
        const box = el.getBoundingClientRect();
        if (box.width && (box.right > area.right + 0.5 || box.left < area.left - 0.5)) {
            out.push((el.name || el.tagName) + ' ' + Math.round(box.left) + '..'
                + Math.round(box.right));
        }
    }
    return out;
}"""


@pytest.mark.parametrize(("width", "height"), LAPTOPS)
def test_the_schedule_forms_preview_and_save_at_laptop_widths(
    live_server: Any,
    chromium: Any,
    artifacts: Path,
    django_user_model: Any,
    width: int,
    height: int,
) -> None:
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    only_the_example_handlers()
    context = chromium.new_context(
        viewport={"width": width, "height": height}, locale="en-US", timezone_id="Europe/Paris"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    size = f"{width}x{height}"
    try:
        page.goto(live_server.url + reverse("admin:index"))
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.goto(live_server.url + reverse("admin:django_alarms_alarm_changelist"))
        page.click("text=Add recurring alarm")
        page.select_option("#id_handler", "heartbeat_report")
        page.fill("#id_payload", '{"report": "daily"}')
        page.fill("#id_cron", "30 2 * * *")
        page.select_option("#id_timezone", "Europe/Paris")
        page.fill("#id_start", "2027-03-25 00:00")
        page.fill("#id_key", "reports")
        page.fill("#id_name", "nightly")
        page.click("input[name=_preview]")
        preview = page.locator(".alarms-preview")
        expect(preview).to_contain_text("DST gap")
        assert page.evaluate(FITS) == []
        page.screenshot(path=str(artifacts / f"admin-schedule-preview-{size}.png"), full_page=True)
        assert not Alarm.objects.exists(), "a preview writes nothing"

        page.fill("#id_every", "15m")  # two schedules: an error on the form, nothing written
        page.click("input[name=_save]")
        expect(page.locator(".errorlist").first).to_be_visible()
        page.screenshot(path=str(artifacts / f"admin-schedule-error-{size}.png"), full_page=True)
        assert not Alarm.objects.exists()

        page.fill("#id_every", "")
        page.click("input[name=_save]")
        expect(page.locator(".messagelist")).to_contain_text("nightly")
        alarm = Alarm.objects.get(key="reports", name="nightly")
        assert alarm.recurrence["cron"] == "30 2 * * *"

        page.goto(live_server.url + reverse("admin:django_alarms_alarm_changelist"))
        page.click("text=Add alarm")
        page.select_option("#id_handler", "send_reminder")
        page.fill("#id_payload", '{"account": 7}')
        assert page.evaluate(FITS) == []
        page.screenshot(path=str(artifacts / f"admin-schedule-oneoff-{size}.png"), full_page=True)
    finally:
        context.close()
