"""The admin in a real browser: an operator logs in, finds the failed alarm, reads its
tracebacks, presses Retry and sees it scheduled again; screenshots for the docs on the way.

Then the lists are measured on two laptop screens with Django's navigation sidebar open, and
every page is pictured at each size (``admin-*-1440x900.png`` are the ones in the docs).

Run with ``pytest -m browser`` (Debian's ``chromium`` and the ``browser`` extra's Playwright).
Screenshots land in ``tests/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from django_alarms import alarms
from django_alarms.handlers import registry
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.types import Outcome, State

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
EXAMPLE_HANDLERS = ("send_reminder", "flaky_partner_call", "poll_export", "heartbeat_report")

TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/django_alarms/delivery.py", line 131, in execute
    answer = spec.func(context)
  File "/srv/shop/billing/alarms.py", line 31, in send_reminder
    mailer.send(template="payment-due", to=account.email)
  File "/srv/shop/billing/mail.py", line 58, in send
    connection.sendmail(self.sender, [to], message.as_bytes())
  File "/usr/lib/python3.12/smtplib.py", line 405, in getreply
    raise SMTPServerDisconnected("Connection unexpectedly closed")
smtplib.SMTPServerDisconnected: Connection unexpectedly closed"""


def seed(now: datetime) -> Alarm:
    """A day in the life of a shop: what is coming, what happened, one reminder that failed.
    Returns the failed reminder."""
    failed = Alarm.objects.create(
        handler="send_reminder",
        key="account-7",
        name="reminder",
        payload={
            "account": 7,
            "email": "ada@example.com",
            "template": "payment-due",
            "smtp": {"host": "mail.example.com", "password": "hunter2"},
            "api_token": "tok_live_51H8",
        },
        state=State.FAILED,
        due_at=now - timedelta(minutes=47),
        attempts=5,
        max_attempts=5,
        last_error="SMTPServerDisconnected: Connection unexpectedly closed",
        created_at=now - timedelta(hours=3),
        updated_at=now - timedelta(minutes=6),
        finished_at=now - timedelta(minutes=6),
    )
    started = now - timedelta(minutes=47)
    for number, delay in enumerate((0, 1, 3, 7, 15), start=1):
        begin = started + timedelta(minutes=delay, seconds=number)
        Attempt.objects.create(
            alarm=failed,
            number=number,
            outcome=Outcome.ERROR,
            started_at=begin,
            finished_at=begin + timedelta(seconds=2.4),
            handler="send_reminder",
            due_at=failed.due_at,
            error="SMTPServerDisconnected: Connection unexpectedly closed",
            traceback=TRACEBACK,
            worker=f"web-{1 + number % 2}:{4100 + number % 2}",
        )
    Alarm.objects.create(
        handler="flaky_partner_call",
        key="order-1182",
        name="confirm",
        payload={"order": 1182},
        state=State.FAILED,
        due_at=now - timedelta(hours=5),
        attempts=3,
        max_attempts=3,
        last_error="ConnectionError: partner API timed out",
        finished_at=now - timedelta(hours=4),
    )

    # What is coming: a busy afternoon, a quiet night, two alarms a little late.
    coming = []
    for hour in range(24):
        local_hour = timezone.localtime(now + timedelta(hours=hour)).hour
        per_hour = 9 if 9 <= local_hour < 18 else (4 if 7 <= local_hour < 22 else 1)
        for index in range(per_hour + hour % 3):
            coming.append(
                Alarm(
                    handler=("send_reminder", "poll_export")[index % 2],
                    key=f"account-{1000 + hour * 100 + index}",
                    name="reminder" if index % 2 == 0 else "",
                    payload={"account": 1000 + hour * 100 + index},
                    due_at=now + timedelta(hours=hour, minutes=7 * index % 60 + 1),
                    max_attempts=5,
                )
            )
    for minutes in (3, 12):
        coming.append(
            Alarm(
                handler="send_reminder",
                key=f"account-{minutes}",
                due_at=now - timedelta(minutes=minutes),
                max_attempts=5,
            )
        )
    Alarm.objects.bulk_create(coming)
    alarms.schedule_recurring(
        "heartbeat_report", cron="*/15 * * * *", key="system", name="heartbeat"
    )
    alarms.schedule_recurring(
        "heartbeat_report",
        rate=alarms.Weekdays(17, 0),
        timezone="Europe/Paris",
        key="sales",
        name="daily report",
    )
    Alarm.objects.create(
        handler="poll_export", key="export-9", state=State.PAUSED, due_at=now, max_attempts=5
    )

    # What happened: a day of deliveries, mostly fine.
    done = Alarm.objects.create(
        handler="send_reminder",
        key="account-3",
        state=State.SUCCEEDED,
        due_at=now - timedelta(hours=1),
        attempts=1,
        max_attempts=5,
        finished_at=now - timedelta(hours=1),
    )
    history = []
    pattern = [Outcome.OK] * 9 + [Outcome.RETRY]
    for hour in range(1, 24):
        begin = now - timedelta(hours=hour)
        local_hour = timezone.localtime(begin).hour
        volume = 12 if 9 <= local_hour < 18 else 4
        for index in range(volume):
            outcome = pattern[(hour + index) % len(pattern)]
            if hour in (2, 3) and index < 3:
                outcome = Outcome.ERROR
            if hour == 9 and index == 0:
                outcome = Outcome.TIMEOUT
            if hour == 14 and index == 1:
                outcome = Outcome.LOST
            history.append(
                Attempt(
                    alarm=done,
                    number=1000 + hour * 20 + index,
                    outcome=outcome,
                    started_at=begin + timedelta(minutes=index * 4),
                    finished_at=begin + timedelta(minutes=index * 4, seconds=0.3),
                    handler=("send_reminder", "poll_export", "flaky_partner_call")[index % 3],
                    error="ConnectionError: partner API timed out"
                    if outcome in (Outcome.ERROR, Outcome.TIMEOUT, Outcome.LOST)
                    else "",
                    worker="web-1:4101",
                )
            )
    Attempt.objects.bulk_create(history)

    for name, host, beat in (
        ("web-1:4101", "web-1", now - timedelta(seconds=4)),
        ("web-2:4102", "web-2", now - timedelta(seconds=7)),
        ("web-3:3990", "web-3", now - timedelta(hours=2)),
    ):
        Worker.objects.create(
            name=name,
            hostname=host,
            pid=int(name.rsplit(":", 1)[1]),
            executor="inline",
            concurrency=8,
            started_at=now - timedelta(days=1),
            heartbeat_at=beat,
            in_flight=2 if beat > now - timedelta(minutes=1) else 0,
        )
    return failed


def only_the_example_handlers() -> None:
    """Keep the example project's handlers in the handler filter (the suite's own probes are
    noise in a screenshot); ``tests/conftest.py`` restores the registry after the test."""
    for name in registry.names():
        if name not in EXAMPLE_HANDLERS:
            registry.unregister(name)


def test_an_operator_finds_a_failed_alarm_reads_its_tracebacks_and_retries_it(
    live_server: Any, page: Any, artifacts: Path, django_user_model: Any
) -> None:
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    failed = seed(timezone.now())
    only_the_example_handlers()

    # Log in.
    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("operator")

    # The alarm list, then only the failed ones.
    page.goto(live_server.url + reverse("admin:django_alarms_alarm_changelist"))
    expect(page.locator("#result_list")).to_be_visible()
    page.screenshot(path=str(artifacts / "admin-changelist.png"))
    page.locator("#changelist-filter").get_by_role("link", name="failed", exact=True).click()
    expect(page).to_have_url(re.compile(r"state__exact=failed"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    page.screenshot(path=str(artifacts / "admin-changelist-failed.png"))

    # Open the reminder and read its tracebacks.
    row = rows.filter(has_text="account-7")
    row.get_by_role("link", name="send_reminder").click()
    expect(page.locator("h2", has_text="Attempts, newest first")).to_be_visible()
    tracebacks = page.locator("details.alarms-traceback")
    expect(tracebacks).to_have_count(5)
    expect(tracebacks.first.locator("pre")).not_to_be_visible()
    tracebacks.first.locator("summary").click()
    expect(tracebacks.first.locator("pre")).to_be_visible()
    expect(tracebacks.first.locator("pre")).to_contain_text("smtplib.SMTPServerDisconnected")
    payload = page.locator("pre.alarms-json")
    expect(payload).to_contain_text('"email": "ada@example.com"')
    expect(payload).not_to_contain_text("hunter2")
    page.screenshot(path=str(artifacts / "admin-detail.png"), full_page=True)

    # Retry it: it is scheduled again, due now, and the admin log says who did it.
    page.get_by_role("link", name="Retry now").click()
    expect(page.locator("h1")).to_have_text("Retry this alarm now?")
    expect(page.locator(".alarms-change")).to_contain_text("scheduled again, due now")
    page.get_by_role("button", name="Yes, retry 1 alarm").click()
    expect(page.locator(".messagelist")).to_contain_text(
        "Retried 1 failed alarm: it is scheduled again, due now."
    )
    expect(page.locator(".field-state_display .alarms-badge")).to_have_text("scheduled")
    expect(page.get_by_role("button", name="Run now")).to_be_visible()
    failed.refresh_from_db()
    assert failed.state == State.SCHEDULED
    assert failed.budget_attempts == 0
    page.screenshot(path=str(artifacts / "admin-detail-retried.png"))

    # Reschedule it: the form refuses a time without a UTC offset, then takes one.
    page.get_by_role("link", name="Reschedule…").click()
    page.fill("#id_at", "2031-03-03 09:30")
    page.get_by_role("button", name="Reschedule").click()
    expect(page.locator(".errorlist")).to_contain_text("has no UTC offset")
    page.screenshot(path=str(artifacts / "admin-reschedule.png"))
    page.fill("#id_at", "2031-03-03 09:30+01:00")
    page.get_by_role("button", name="Reschedule").click()
    expect(page.locator(".messagelist")).to_contain_text("Rescheduled 1 scheduled alarm.")
    expect(page.locator(".field-due_detail")).to_contain_text("2031-03-03 09:30:00 CET")

    # Every attempt, and the workers.
    page.goto(live_server.url + reverse("admin:django_alarms_attempt_changelist"))
    expect(page.locator("#result_list")).to_be_visible()
    page.screenshot(path=str(artifacts / "admin-attempts.png"))
    page.goto(live_server.url + reverse("admin:django_alarms_worker_changelist"))
    expect(page.locator("#result_list .alarms-dead")).to_have_count(1)
    page.screenshot(path=str(artifacts / "admin-workers.png"))

    # The overview, from the list's "Overview" link.
    page.goto(live_server.url + reverse("admin:django_alarms_alarm_changelist"))
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("h1")).to_have_text("Alarms overview")
    expect(page.locator("svg.alarms-chart")).to_have_count(2)
    expect(page.locator(".alarms-failing")).to_contain_text("flaky_partner_call")
    page.screenshot(path=str(artifacts / "admin-overview.png"), full_page=True)

    # A recurring alarm: its schedule in words and its next occurrences.
    report = Alarm.objects.get(key="sales", name="daily report")
    page.goto(live_server.url + reverse("admin:django_alarms_alarm_change", args=[report.pk]))
    expect(page.locator(".field-schedule")).to_contain_text("At 17:00, Monday through Friday")
    expect(page.locator("table.alarms-upcoming tbody tr")).to_have_count(5)
    page.get_by_role("group", name="Schedule").screenshot(
        path=str(artifacts / "admin-recurring.png")
    )


def test_a_read_only_user_can_look_but_not_act(
    live_server: Any, page: Any, django_user_model: Any
) -> None:
    from django.contrib.auth.models import Permission
    from playwright.sync_api import expect

    support = django_user_model.objects.create_user("support", password=PASSWORD, is_staff=True)
    support.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="django_alarms", codename__startswith="view_"
        )
    )
    failed = seed(timezone.now())

    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "support")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(live_server.url + reverse("admin:django_alarms_alarm_change", args=[failed.pk]))
    expect(page.locator("details.alarms-traceback")).to_have_count(5)
    expect(page.locator(".alarms-buttons")).to_have_count(0)
    page.goto(live_server.url + reverse("admin:django_alarms_alarm_changelist"))
    expect(page.locator("select[name=action]")).to_have_count(0)


#: Common laptop screens; the tests open Django's navigation sidebar (its default).
LAPTOPS = [(1366, 768), (1440, 900)]

MEASURE = """(selector) => {
    // What of the list ``selector`` does not fit: cells whose box leaves the content area
    // (cut off, or seen only by scrolling sideways), a table wider than its container, and
    // cells taller than three lines of text (a column squeezed to a word per line).
    const table = document.querySelector(selector);
    const container = table.parentElement;
    const areas = [container, ...document.querySelectorAll('#changelist, #content')]
        .map((area) => area.getBoundingClientRect());
    const lineHeight = (cell) => {
        const style = getComputedStyle(cell);
        const line = parseFloat(style.lineHeight);
        return Number.isNaN(line) ? parseFloat(style.fontSize) * 1.2 : line;
    };
    const problems = [];
    const overflow = table.getBoundingClientRect().width - container.clientWidth;
    if (overflow > 0.5) {
        problems.push('table ' + Math.round(overflow) + ' px wider than its container');
    }
    for (const cell of table.querySelectorAll('thead th, tbody th, tbody td')) {
        const box = cell.getBoundingClientRect();
        if (box.width === 0) continue;  // a column hidden at this width
        const text = cell.innerText.trim().slice(0, 20);
        const name = (cell.className || cell.tagName).trim() + ' "' + text + '"';
        for (const area of areas) {
            if (box.right > area.right + 0.5 || box.left < area.left - 0.5) {
                problems.push(name + ': ' + Math.round(box.left) + '..' + Math.round(box.right)
                    + ' outside ' + Math.round(area.left) + '..' + Math.round(area.right));
                break;
            }
        }
        const style = getComputedStyle(cell);
        const inner = box.height - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
        if (inner > 3.5 * lineHeight(cell)) {
            problems.push(name + ': ' + Math.round(inner) + ' px tall, over 3 lines');
        }
    }
    return problems;
}"""


def misfits(page: Any, table: str = "#result_list") -> list[str]:
    """What of ``table`` does not fit the page (see :data:`MEASURE`); empty when it fits."""
    problems: list[str] = page.evaluate(MEASURE, table)
    return problems


@pytest.mark.parametrize(("width", "height"), LAPTOPS)
def test_the_lists_fit_a_laptop_with_the_sidebar_open_and_every_page_is_pictured(
    live_server: Any,
    chromium: Any,
    artifacts: Path,
    django_user_model: Any,
    width: int,
    height: int,
) -> None:
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    failed = seed(timezone.now())
    only_the_example_handlers()
    context = chromium.new_context(
        viewport={"width": width, "height": height},
        color_scheme="light",
        locale="en-US",
        timezone_id="Europe/Paris",
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    size = f"{width}x{height}"

    def shoot(name: str, full_page: bool = True) -> None:
        page.screenshot(path=str(artifacts / f"{name}-{size}.png"), full_page=full_page)

    try:
        page.goto(live_server.url + reverse("admin:index"))
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        expect(page.locator("#user-tools")).to_contain_text("operator")
        page.evaluate("localStorage.setItem('django.admin.navSidebarIsOpen', 'true')")

        page.goto(live_server.url + reverse("admin:django_alarms_alarm_changelist"))
        expect(page.locator("#nav-sidebar")).to_be_visible()
        expect(page.locator("#result_list")).to_be_visible()
        shoot("admin-changelist", full_page=False)
        assert misfits(page) == []
        page.locator("#changelist-filter").get_by_role("link", name="failed", exact=True).click()
        expect(page.locator("#result_list tbody tr")).to_have_count(2)
        shoot("admin-changelist-failed", full_page=False)
        assert misfits(page) == []

        page.goto(live_server.url + reverse("admin:django_alarms_attempt_changelist"))
        expect(page.locator("#result_list")).to_be_visible()
        shoot("admin-attempts", full_page=False)
        assert misfits(page) == []

        page.goto(live_server.url + reverse("admin:django_alarms_worker_changelist"))
        expect(page.locator("#result_list .alarms-dead")).to_have_count(1)
        shoot("admin-workers", full_page=False)
        assert misfits(page) == []

        page.goto(live_server.url + reverse("admin:django_alarms_alarm_change", args=[failed.pk]))
        expect(page.locator("details.alarms-traceback")).to_have_count(5)
        shoot("admin-detail")
        page.get_by_role("link", name="Reschedule…").click()
        page.fill("#id_at", "2031-03-03 09:30")
        page.get_by_role("button", name="Reschedule").click()
        expect(page.locator(".errorlist")).to_contain_text("has no UTC offset")
        shoot("admin-reschedule")

        report = Alarm.objects.get(key="sales", name="daily report")
        page.goto(live_server.url + reverse("admin:django_alarms_alarm_change", args=[report.pk]))
        expect(page.locator("table.alarms-upcoming tbody tr")).to_have_count(5)
        page.get_by_role("group", name="Schedule").screenshot(
            path=str(artifacts / f"admin-recurring-{size}.png")
        )

        page.goto(live_server.url + reverse("admin:django_alarms_alarm_overview"))
        expect(page.locator("svg.alarms-chart")).to_have_count(2)
        shoot("admin-overview")

        worker = Worker.objects.order_by("name").first()
        assert worker is not None
        page.goto(live_server.url + reverse("admin:django_alarms_worker_change", args=[worker.pk]))
        expect(page.locator(".field-served_handlers")).to_contain_text("all registered")
        shoot("admin-worker")

        # Each action's confirmation page: three alarms ticked, the action chosen, Go.
        for action, name in (
            ("retry_now", "retry"),
            ("run_now", "run"),
            ("pause_alarms", "pause"),
            ("resume_alarms", "resume"),
            ("cancel_alarms", "cancel"),
            ("delete_alarms", "delete"),
        ):
            page.goto(live_server.url + reverse("admin:django_alarms_alarm_changelist"))
            boxes = page.locator("#result_list tbody input.action-select")
            for index in range(3):
                boxes.nth(index).check()
            page.select_option("select[name=action]", action)
            page.locator("button[name=index]").click()
            expect(page.locator("body.alarms-confirm")).to_be_visible()
            shoot(f"admin-confirm-{name}")
            assert misfits(page, ".alarms-selection") == []
    finally:
        context.close()
