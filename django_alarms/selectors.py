"""Read-only queries for the admin and the operators' commands: counts, per-hour buckets,
failing handlers, workers. No writes.

Every query here is bounded, so that the admin stays fast on a table of millions of alarms: it
reads a time window through an index, stops counting at a cap, or probes an index a fixed
number of times. Aggregations happen in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncHour

from django_alarms.conf import alarm_settings
from django_alarms.engines import get_engine
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.types import ACTIVE_STATES, Outcome, State

UTC = timezone.utc
HOUR = timedelta(hours=1)

#: Outcomes that count as a failure of the handler.
FAILURES = (Outcome.ERROR, Outcome.TIMEOUT, Outcome.LOST)

#: Where the per-state counts of the overview stop counting.
STATE_COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class Capped:
    """A count that stopped at ``cap``: ``value`` is exact unless ``capped``."""

    value: int
    capped: bool


def capped_count(queryset: QuerySet[Any], cap: int) -> Capped:
    """Count the rows of ``queryset``, reading at most ``cap + 1`` of them."""
    found = queryset.order_by()[: cap + 1].count()
    return Capped(min(found, cap), found > cap)


def estimated_row_count(model: type[Any], *, using: str = "default") -> int | None:
    """The planner's estimate of a table's rows (PostgreSQL), or ``None`` where there is none."""
    return get_engine(using).estimated_row_count(model)


def state_counts(*, cap: int = STATE_COUNT_CAP) -> dict[str, Capped]:
    """How many alarms are in each state, each count capped (one index range per state)."""
    return {state: capped_count(Alarm.objects.filter(state=state), cap) for state in State.values}


def overdue_count(*, now: datetime, cap: int = STATE_COUNT_CAP) -> Capped:
    """Scheduled alarms whose due time has passed (capped)."""
    return capped_count(Alarm.objects.due(now).filter(due_at__lt=now), cap)


def oldest_overdue(*, now: datetime) -> Alarm | None:
    """The scheduled alarm that has waited longest past its due time, if any."""
    return (
        Alarm.objects.filter(state=State.SCHEDULED, due_at__lt=now)
        .order_by("due_at")
        .defer("payload", "recurrence")
        .first()
    )


def hour_floor(moment: datetime) -> datetime:
    """The start of the UTC hour that contains ``moment``."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours(start: datetime, count: int) -> list[datetime]:
    return [start + index * HOUR for index in range(count)]


def due_per_hour(*, now: datetime, hours_ahead: int = 24) -> list[tuple[datetime, int]]:
    """Scheduled alarms per hour, from the current hour on, for ``hours_ahead`` hours.

    Buckets are UTC hours (DST-proof, and no time zone tables needed on MySQL); alarms already
    overdue are not in them (see :func:`overdue_count`).
    """
    start = hour_floor(now)
    end = start + hours_ahead * HOUR
    rows = (
        Alarm.objects.filter(state=State.SCHEDULED, due_at__gte=now, due_at__lt=end)
        .annotate(hour=TruncHour("due_at", tzinfo=UTC))
        .values("hour")
        .annotate(count=Count("pk"))
        .order_by()
    )
    found = {row["hour"].astimezone(UTC): row["count"] for row in rows}
    return [(hour, found.get(hour, 0)) for hour in hours(start, hours_ahead)]


def outcomes_per_hour(
    *, now: datetime, hours_back: int = 24
) -> list[tuple[datetime, dict[str, int]]]:
    """Attempt outcomes per UTC hour, for the last ``hours_back`` hours (the current included)."""
    start = hour_floor(now) - (hours_back - 1) * HOUR
    rows = (
        Attempt.objects.filter(started_at__gte=start)
        .annotate(hour=TruncHour("started_at", tzinfo=UTC))
        .values("hour", "outcome")
        .annotate(count=Count("pk"))
        .order_by()
    )
    found: dict[datetime, dict[str, int]] = {}
    for row in rows:
        found.setdefault(row["hour"].astimezone(UTC), {})[row["outcome"]] = row["count"]
    return [
        (hour, {outcome: found.get(hour, {}).get(outcome, 0) for outcome in Outcome.values})
        for hour in hours(start, hours_back)
    ]


@dataclass(frozen=True, slots=True)
class FailingHandler:
    handler: str
    failures: int
    last_failure_at: datetime
    last_error: str


def failing_handlers(
    *, now: datetime, window: timedelta = timedelta(hours=24), limit: int = 10
) -> list[FailingHandler]:
    """Handlers whose attempts failed (error, timeout, lost) within ``window``, worst first."""
    since = now - window
    failed = Attempt.objects.filter(outcome__in=FAILURES, started_at__gte=since)
    latest_error = (
        failed.filter(handler=OuterRef("handler")).order_by("-started_at").values("error")[:1]
    )
    rows = (
        failed.values("handler")
        .annotate(failures=Count("pk"), last_failure_at=Max("started_at"))
        .annotate(last_error=Subquery(latest_error))
        .order_by("-failures", "handler")[:limit]
    )
    return [
        FailingHandler(
            handler=row["handler"],
            failures=row["failures"],
            last_failure_at=row["last_failure_at"],
            last_error=row["last_error"] or "",
        )
        for row in rows
    ]


def alive_since(now: datetime) -> datetime:
    """Workers whose last heartbeat is after this are alive: three heartbeat intervals ago."""
    return now - 3 * alarm_settings.HEARTBEAT_INTERVAL


def active_by_handler() -> dict[str, dict[str, int]]:
    """Alarms scheduled, running or paused, by handler and state (one grouped query, served by
    the partial indexes of those states)."""
    rows = (
        Alarm.objects.filter(state__in=ACTIVE_STATES)
        .values("handler", "state")
        .annotate(count=Count("pk"))
        .order_by("handler", "state")
    )
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["handler"], {})[row["state"]] = row["count"]
    return counts


def next_due(*, now: datetime, limit: int = 5) -> list[Alarm]:
    """The scheduled alarms due next, from ``now`` on (overdue ones are counted apart)."""
    return list(
        Alarm.objects.filter(state=State.SCHEDULED, due_at__gte=now)
        .order_by("due_at", "id")
        .defer("payload", "recurrence")[:limit]
    )


def workers() -> list[Worker]:
    """Every registered worker, the latest heartbeat first."""
    return list(Worker.objects.order_by("-heartbeat_at"))


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    alive: int
    dead: int
    in_flight: int


def worker_summary(*, alive_since: datetime) -> WorkerSummary:
    """Workers that heartbeat since ``alive_since`` (alive) and those that stopped (dead)."""
    alive = Q(heartbeat_at__gte=alive_since)
    row = Worker.objects.aggregate(
        alive=Count("pk", filter=alive),
        dead=Count("pk", filter=~alive),
        in_flight=Sum("in_flight", filter=alive),
    )
    return WorkerSummary(alive=row["alive"], dead=row["dead"], in_flight=row["in_flight"] or 0)


# -- the date hierarchy of the alarm list ----------------------------------------------------
#
# Django's date hierarchy asks for MIN/MAX and the DISTINCT years, months or days of ``due_at``
# over the whole list: on millions of rows, full scans. The (state, due_at) index answers the
# same questions in a handful of probes when each probe names one state, so these helpers probe
# state by state, all in one query.


def due_range(
    queryset: QuerySet[Alarm], states: Sequence[str] = State.values
) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest ``due_at`` of the ``states`` alarms of ``queryset``."""
    probes: dict[str, Any] = {}
    for state in states:
        in_state = queryset.filter(state=state).values("due_at")
        probes[f"first_{state}"] = Subquery(in_state.order_by("due_at")[:1])
        probes[f"last_{state}"] = Subquery(in_state.order_by("-due_at")[:1])
    row = _probe(queryset, states, probes)
    if row is None:
        return None, None
    firsts = [row[f"first_{state}"] for state in states if row[f"first_{state}"]]
    lasts = [row[f"last_{state}"] for state in states if row[f"last_{state}"]]
    return (min(firsts) if firsts else None, max(lasts) if lasts else None)


def first_due(
    queryset: QuerySet[Alarm], after: datetime, states: Sequence[str] = State.values
) -> datetime | None:
    """The earliest ``due_at`` at or after ``after`` of the ``states`` alarms of ``queryset``."""
    probes = {
        f"first_{state}": Subquery(
            queryset.filter(state=state, due_at__gte=after).values("due_at").order_by("due_at")[:1]
        )
        for state in states
    }
    row = _probe(queryset, states, probes)
    found = [value for value in (row or {}).values() if value is not None]
    return min(found) if found else None


def periods_with_alarms(
    queryset: QuerySet[Alarm],
    periods: Sequence[tuple[datetime, datetime]],
    states: Sequence[str] = State.values,
) -> list[bool]:
    """For each ``[start, end)`` period, whether ``queryset`` has a ``states`` alarm due in it:
    one query, an index probe per state and period."""
    if not periods:
        return []
    # The first due_at of the period rather than EXISTS: ordering by the index's column makes
    # the planner walk the index, where EXISTS may pick a sequential scan that finds its first
    # row far into a large table.
    probes = {
        f"p{index}_{state}": Subquery(
            queryset.filter(state=state, due_at__gte=start, due_at__lt=end)
            .order_by("due_at")
            .values("due_at")[:1]
        )
        for index, (start, end) in enumerate(periods)
        for state in states
    }
    row = _probe(queryset, states, probes)
    if row is None:
        return [False] * len(periods)
    return [
        any(row[f"p{index}_{state}"] is not None for state in states)
        for index in range(len(periods))
    ]


def _probe(
    queryset: QuerySet[Alarm], states: Sequence[str], probes: dict[str, Any]
) -> dict[str, Any] | None:
    """Evaluate uncorrelated subqueries once, on one row of ``queryset`` (``None`` if it has
    none in ``states``: then there is nothing to find). Naming the states lets the index find
    that row."""
    rows = queryset.filter(state__in=states).order_by().annotate(**probes).values(*probes)[:1]
    return next(iter(rows), None)
