"""Lateness: how long after the time it was for each attempt started, and its percentiles per
handler for the overview, read from a bounded number of rows."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django_alarms.models import Attempt

#: The most attempts the overview reads to compute lateness: the latest ones of the period.
MAX_LATENESS_ROWS = 10_000


def of(attempt: Attempt) -> float | None:
    """Seconds from the time ``attempt`` was for (the alarm's due time when it was claimed,
    or the occurrence of a recurring alarm: ``Attempt.due_at``) to its start."""
    if attempt.due_at is None:
        return None
    return (attempt.started_at - attempt.due_at).total_seconds()


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``ordered`` (sorted, not empty): the smallest value
    that at least ``fraction`` of the values do not exceed. Of 10 values, p50 is the 5th and
    p99 the 10th."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class HandlerLateness:
    handler: str
    attempts: int
    p50: float
    p99: float
    worst: float


@dataclass(frozen=True, slots=True)
class Lateness:
    """Lateness per handler over a period; ``capped`` when the period held more attempts than
    were read (then the figures are those of the latest :data:`MAX_LATENESS_ROWS`)."""

    rows: list[HandlerLateness]
    read: int
    capped: bool
    since: datetime


def by_handler(
    *, now: datetime, period: timedelta = timedelta(hours=1), cap: int | None = None
) -> Lateness:
    """p50, p99 and the worst lateness per handler of the attempts started in the last
    ``period``, from the latest ``cap`` of them at most (default :data:`MAX_LATENESS_ROWS`):
    one query along the index of start times, whatever the size of the table; the
    percentiles are computed here."""
    cap = MAX_LATENESS_ROWS if cap is None else cap
    since = now - period
    values = list(
        Attempt.objects.filter(started_at__gte=since, started_at__lte=now, due_at__isnull=False)
        .order_by("-started_at")
        .values_list("handler", "started_at", "due_at")[: cap + 1]
    )
    capped = len(values) > cap
    values = values[:cap]
    per_handler: defaultdict[str, list[float]] = defaultdict(list)
    for handler, started_at, due_at in values:
        if due_at is not None:  # filtered out above; the type does not know
            per_handler[handler].append((started_at - due_at).total_seconds())
    rows = []
    for handler, lateness in sorted(per_handler.items()):
        lateness.sort()
        rows.append(
            HandlerLateness(
                handler=handler,
                attempts=len(lateness),
                p50=percentile(lateness, 0.50),
                p99=percentile(lateness, 0.99),
                worst=lateness[-1],
            )
        )
    return Lateness(rows=rows, read=len(values), capped=capped, since=since)
