"""Whether alarms are being delivered: what ``alarms_health`` and the django-health-check
plugin (:mod:`django_alarms.contrib.health_check`) examine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django_alarms import selectors
from django_alarms.models import Attempt, Worker
from django_alarms.templatetags.alarms_admin import span as words

#: How many of the last hour's attempts the failure rate is measured on, at most (the latest).
RATE_SAMPLE = 10_000
FAILURE_WINDOW = timedelta(hours=1)


@dataclass
class Health:
    """What the probe found, and why it is unhealthy (``problems`` empty: healthy)."""

    workers_alive: int = 0
    youngest_heartbeat_age_seconds: float | None = None
    oldest_overdue_seconds: float | None = None
    attempts_sampled: int = 0
    failed_rate: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def examine(
    *,
    now: datetime,
    max_overdue: timedelta,
    max_heartbeat_age: timedelta,
    min_workers: int,
    max_failed_rate: float | None,
    sample: int = RATE_SAMPLE,
) -> Health:
    health = Health()
    ages = [
        (now - beat).total_seconds()
        for beat in Worker.objects.values_list("heartbeat_at", flat=True)
    ]
    alive = [age for age in ages if age <= max_heartbeat_age.total_seconds()]
    health.workers_alive = len(alive)
    health.youngest_heartbeat_age_seconds = round(min(ages), 3) if ages else None
    if len(alive) < min_workers:
        limit = words(max_heartbeat_age)
        health.problems.append(
            f"{len(alive)} worker(s) with a heartbeat within {limit}, at least {min_workers} wanted"
        )
    oldest = selectors.oldest_overdue(now=now)
    if oldest is not None:
        late = now - oldest.due_at
        health.oldest_overdue_seconds = round(late.total_seconds(), 3)
        if late > max_overdue:
            health.problems.append(
                f"the oldest overdue alarm is {words(late)} late (at most {words(max_overdue)} "
                f"allowed): {oldest.id} {oldest.handler}"
            )
    if max_failed_rate is not None:
        outcomes = list(
            Attempt.objects.filter(started_at__gte=now - FAILURE_WINDOW)
            .order_by("-started_at")
            .values_list("outcome", flat=True)[:sample]
        )
        health.attempts_sampled = len(outcomes)
        if outcomes:
            failed = sum(1 for outcome in outcomes if outcome in selectors.FAILURES)
            health.failed_rate = round(failed / len(outcomes), 4)
            if health.failed_rate > max_failed_rate:
                health.problems.append(
                    f"{failed:,} of the last {len(outcomes):,} attempts failed "
                    f"({health.failed_rate:.1%}; at most {max_failed_rate:.1%} allowed)"
                )
    return health


def summary(health: Health) -> str:
    """The one line a probe's log shows."""
    if not health.ok:
        return "FAIL: " + "; ".join(health.problems)
    parts = [f"{health.workers_alive} worker(s) alive"]
    if health.oldest_overdue_seconds is None:
        parts.append("nothing overdue")
    else:
        parts.append(f"oldest overdue {health.oldest_overdue_seconds:g} s")
    if health.failed_rate is not None:
        parts.append(f"{health.failed_rate:.1%} of the last hour's attempts failed")
    return "OK: " + ", ".join(parts)
