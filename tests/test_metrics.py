"""Prometheus metrics: a real worker's ``--metrics-port``, the database collector's view, the
settings and checks around them."""

from __future__ import annotations

import socket
import urllib.request
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_alarms import alarms, checks, clock, metrics
from django_alarms.conf import alarm_settings, validate
from django_alarms.models import Alarm, Worker
from django_alarms.testing import AlarmFactory
from django_alarms.types import State
from tests.workers import running_workers, wait_for

TOKEN = "s3cret-token-for-the-scraper"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return samples(response.read().decode())


# -- a real worker --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.subprocess
def test_a_real_worker_serves_counters_and_a_lateness_histogram_that_move(tmp_path):
    port = free_port()
    with running_workers(tmp_path, 1, "--metrics-port", f"127.0.0.1:{port}") as workers:
        before = wait_for(lambda: scrape(port), workers=workers, what="the metrics endpoint")
        assert value(before, "django_alarms_attempts_total", handler="probe", outcome="ok") == 0
        for n in range(3):
            alarms.schedule("probe", {"n": n}, delay=timedelta(milliseconds=300))
        alarms.schedule("probe", {"fail": "no"})  # 3 attempts, each an error, then failed

        def moved() -> dict | None:
            found = scrape(port)
            ok = value(found, "django_alarms_attempts_total", handler="probe", outcome="ok")
            errors = value(found, "django_alarms_attempts_total", handler="probe", outcome="error")
            return found if (ok, errors) == (3, 3) else None

        after = wait_for(moved, workers=workers, what="the counters to move")
    assert Alarm.objects.filter(state=State.FAILED).count() == 1
    assert value(after, "django_alarms_lateness_seconds_count", handler="probe") == 6
    # Every attempt falls into the histogram's last bucket, and the buckets are cumulative.
    assert value(after, "django_alarms_lateness_seconds_bucket", handler="probe", le="+Inf") == 6
    assert value(after, "django_alarms_lateness_seconds_bucket", handler="probe", le="0.0005") <= 6
    assert value(after, "django_alarms_handler_duration_seconds_count", handler="probe") == 6
    assert value(after, "django_alarms_claims_total") >= 6
    assert value(after, "django_alarms_claim_statement_seconds_count") >= 1
    # The gauges are there (their values are whatever the worker holds at the scrape).
    assert ("django_alarms_worker_armed_timers", frozenset()) in after
    assert ("django_alarms_worker_in_flight_attempts", frozenset()) in after
    # The process's own metrics come with them.
    assert ("process_cpu_seconds_total", frozenset()) in after


@pytest.mark.django_db
def test_metrics_port_that_is_taken_is_a_command_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            call_command("run_alarms", "--once", "--metrics-port", f"127.0.0.1:{port}")


@pytest.mark.django_db
def test_metrics_port_without_prometheus_client_says_which_extra(monkeypatch):
    monkeypatch.setattr(metrics, "available", lambda: False)
    with pytest.raises(CommandError, match=r"django-alarms\[prometheus\]"):
        call_command("run_alarms", "--once", "--metrics-port", str(free_port()))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("0", "between 1 and 65535"),
        ("70000", "between 1 and 65535"),
        ("localhost:", "port number"),
        ("nine", "port number"),
    ],
)
def test_bad_metrics_ports_are_usage_errors(given, message, capsys):
    with pytest.raises(CommandError, match=message):
        call_command("run_alarms", "--metrics-port", given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (9100, ("0.0.0.0", 9100)),
        ("9100", ("0.0.0.0", 9100)),
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_addresses(given, expected):
    assert metrics.parse_address(given) == expected


def test_the_setting_is_validated_and_the_check_names_a_missing_extra(monkeypatch):
    with override_settings(ALARMS={"METRICS_PORT": "x:y"}):
        assert validate() == [
            ("METRICS_PORT", "is 'x:y': must be a port number or host:port, e.g. 9100")
        ]
    with override_settings(ALARMS={"METRICS_PORT": 9100, "TRACING": True}):
        assert alarm_settings.METRICS_PORT == ("0.0.0.0", 9100)
        monkeypatch.setattr(checks, "_importable", lambda module: False)
        found = checks.check_settings(None)
    assert [message.id for message in found] == ["django_alarms.E006", "django_alarms.E006"]
    assert "prometheus-client is not installed" in found[0].msg
    assert "django-alarms[otel]" in found[1].hint
    with override_settings(ALARMS={"METRICS_TOKEN": "short"}):
        assert "at least 16 characters" in validate()[0][1]


# -- the worker's hooks, in process ---------------------------------------------------------------


def test_worker_metrics_bound_the_handler_label(monkeypatch):
    from prometheus_client import CollectorRegistry

    from django_alarms.outcomes import Result, decide
    from tests.factories import a_claim

    registry = CollectorRegistry()
    counting = metrics._Prometheus(registry)
    now = clock.now()
    known = a_claim(handler="tests.ok", due_at=now - timedelta(milliseconds=4))
    unknown = a_claim(handler="someone.elses", due_at=now)
    counting.recorded(
        [
            decide(known, Result("ok", now, now + timedelta(milliseconds=2)), now=now),
            decide(unknown, Result("error", now, now, error="x"), now=now),
        ]
    )
    found = samples(_text(registry))
    assert value(found, "django_alarms_attempts_total", handler="tests.ok", outcome="ok") == 1
    assert (
        value(found, "django_alarms_attempts_total", handler="unregistered", outcome="error") == 1
    )
    assert (
        value(found, "django_alarms_lateness_seconds_bucket", handler="tests.ok", le="0.005") == 1
    )
    assert (
        value(found, "django_alarms_lateness_seconds_bucket", handler="tests.ok", le="0.003") == 0
    )


def _text(registry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


# -- the database collector through the view ------------------------------------------------------


@pytest.fixture
def site(db):
    now = clock.now()
    AlarmFactory(handler="tests.ok", due_at=now - timedelta(minutes=2))
    AlarmFactory(handler="tests.ok", due_at=now + timedelta(minutes=5))
    AlarmFactory(handler="probe", state=State.PAUSED, due_at=now + timedelta(hours=1))
    AlarmFactory(handler="tests.boom", failed=True)
    Worker.objects.create(
        name="w1", hostname="h", pid=1, started_at=now, heartbeat_at=now - timedelta(seconds=4)
    )
    return now


@override_settings(ALARMS={"METRICS_TOKEN": TOKEN})
def test_the_view_serves_the_database_collector_to_a_scraper_with_the_token(client, site):
    response = client.get("/alarms/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    found = samples(response.content.decode())
    assert value(found, "django_alarms_alarms", state="scheduled", handler="tests.ok") == 2
    assert value(found, "django_alarms_alarms", state="paused", handler="probe") == 1
    assert value(found, "django_alarms_finished_alarms", state="failed") == 1
    assert value(found, "django_alarms_overdue_alarms") == 1
    assert 115 < value(found, "django_alarms_oldest_overdue_seconds") < 600
    assert 0 < value(found, "django_alarms_next_due_seconds") <= 300
    assert value(found, "django_alarms_live_workers") == 1
    assert 3 < value(found, "django_alarms_last_heartbeat_age_seconds") < 600


@override_settings(ALARMS={"METRICS_TOKEN": TOKEN})
@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, ""),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, ""),
        ({"Authorization": f"Basic {TOKEN}"}, ""),
        ({}, f"?token={TOKEN}"),  # never read from the query string
    ],
    ids=["none", "wrong", "not-bearer", "query-string"],
)
def test_the_view_refuses_everyone_else(client, site, headers, query):
    response = client.get(f"/alarms/metrics{query}", headers=headers)
    assert response.status_code == 403
    assert b"django_alarms_" not in response.content
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_without_a_token_only_users_with_the_permission_read_it(client, site):
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get("/alarms/metrics").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_alarm"))
    client.force_login(User.objects.get(pk=user.pk))
    assert client.get("/alarms/metrics").status_code == 200
    # With no token configured, a bearer header never lets anyone in.
    client.logout()
    response = client.get("/alarms/metrics", headers={"Authorization": "Bearer anything-at-all"})
    assert response.status_code == 403


def test_the_view_says_which_extra_is_missing(client, site, monkeypatch):
    admin = User.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    monkeypatch.setattr(metrics, "available", lambda: False)
    response = client.get("/alarms/metrics")
    assert response.status_code == 501
    assert b"django-alarms[prometheus]" in response.content


def test_the_collector_registers_without_querying(django_assert_num_queries, db):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    with django_assert_num_queries(0):
        registry.register(metrics.DatabaseCollector())
