"""The django-health-check plugin: the rules of ``alarms_health``, as a check of that package."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.test import override_settings
from health_check.exceptions import ServiceUnavailable

from django_alarms import clock
from django_alarms.contrib.health_check import Alarms
from django_alarms.models import Worker
from django_alarms.testing import AlarmFactory


def a_live_worker() -> Worker:
    now = clock.now()
    return Worker.objects.create(name="w1", hostname="h", pid=1, started_at=now, heartbeat_at=now)


@pytest.mark.django_db
def test_healthy_with_a_live_worker_and_nothing_overdue():
    a_live_worker()
    AlarmFactory(handler="tests.ok", due_at=clock.now() + timedelta(minutes=5))
    Alarms().run()


@pytest.mark.django_db
def test_unhealthy_says_why():
    AlarmFactory(handler="tests.ok", due_at=clock.now() - timedelta(minutes=10))
    with pytest.raises(ServiceUnavailable) as raised:
        Alarms(max_overdue=timedelta(minutes=1)).run()
    message = str(raised.value)
    assert "0 worker(s) with a heartbeat" in message
    assert "the oldest overdue alarm is 10 min late" in message
    Alarms(max_overdue=timedelta(hours=1), min_workers=0).run()


@pytest.mark.django_db
def test_a_database_that_cannot_be_read_is_unavailable(monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("server closed the connection")

    monkeypatch.setattr("django_alarms.contrib.health_check.examine", broken)
    with pytest.raises(ServiceUnavailable, match="cannot read the alarms' database"):
        Alarms().run()


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF="tests.urls_health")
def test_through_the_packages_view(client):
    AlarmFactory(handler="tests.ok", due_at=clock.now() - timedelta(minutes=2))
    a_live_worker()
    response = client.get("/ht/", headers={"Accept": "application/json"})
    assert response.status_code == 500
    (found,) = response.json().values()
    assert "overdue" in found
    Worker.objects.all().delete()
