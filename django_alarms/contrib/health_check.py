"""A check for `django-health-check <https://pypi.org/project/django-health-check/>`_ 4.0 and
later (``pip install "django-alarms[health]"``): healthy when alarms are being delivered, by
the same rules as ``manage.py alarms_health``.

List it among the view's checks, with thresholds if the defaults do not suit::

    from health_check.views import HealthCheckView

    path("ht/", HealthCheckView.as_view(checks=[
        "health_check.checks.Database",
        ("django_alarms.contrib.health_check.Alarms", {"max_overdue": timedelta(minutes=2)}),
    ])),

The check is unhealthy (``ServiceUnavailable``, with the reason) when fewer than
``min_workers`` workers have a recent heartbeat, when a scheduled alarm has been overdue for
longer than ``max_overdue``, or, with ``max_failed_rate``, when more of the last hour's attempts
failed.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from django.db import DatabaseError, connections

try:
    from health_check.base import HealthCheck
    from health_check.exceptions import ServiceUnavailable
except ImportError as exc:  # pragma: no cover - exercised by the install without extras
    raise ImportError(
        "django_alarms.contrib.health_check needs django-health-check 4.0 or later: "
        'pip install "django-alarms[health]"'
    ) from exc

from django_alarms import clock
from django_alarms.conf import alarm_settings
from django_alarms.health import RATE_SAMPLE, examine


@dataclasses.dataclass
class Alarms(HealthCheck):
    """Alarms are being delivered: live workers, nothing overdue for long, few failures."""

    max_overdue: timedelta = timedelta(seconds=60)
    #: None: three HEARTBEAT_INTERVALs, as in the admin.
    max_heartbeat_age: timedelta | None = None
    min_workers: int = 1
    #: None: the failure rate is not checked.
    max_failed_rate: float | None = None
    sample: int = RATE_SAMPLE

    def run(self) -> None:
        # The package runs synchronous checks in a pool thread that no request cycle cleans
        # up after: close what this check opened, as its own database check does.
        opened = {id(c) for c in connections.all(initialized_only=True) if c.connection}
        try:
            self._examine()
        finally:
            for connection in connections.all(initialized_only=True):
                if connection.connection is not None and id(connection) not in opened:
                    connection.close()

    def _examine(self) -> None:
        try:
            health = examine(
                now=clock.now(),
                max_overdue=self.max_overdue,
                max_heartbeat_age=self.max_heartbeat_age or 3 * alarm_settings.HEARTBEAT_INTERVAL,
                min_workers=self.min_workers,
                max_failed_rate=self.max_failed_rate,
                sample=self.sample,
            )
        except DatabaseError as exc:
            raise ServiceUnavailable("cannot read the alarms' database") from exc
        if not health.ok:
            raise ServiceUnavailable("; ".join(health.problems))
