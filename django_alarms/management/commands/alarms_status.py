"""``manage.py alarms_status``: the state of the alarms and the workers, for a shell or a script."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from datetime import datetime, timedelta, timezone
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError, connections

from django_alarms import clock, selectors
from django_alarms.conf import alarm_settings
from django_alarms.management.commands._options import AlarmsCommand, positive_int
from django_alarms.models import Alarm
from django_alarms.templatetags.alarms_admin import span
from django_alarms.types import ACTIVE_STATES, State

#: How many rows of each state are counted at most by default (``--count-cap``): the counts
#: read an index range each, and stop there on tables of millions.
COUNT_CAP = 100_000
#: The window of the failures reported.
FAILURE_WINDOW = timedelta(hours=1)


def _utc(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def gather(*, now: datetime, cap: int, upcoming: int) -> dict[str, Any]:
    """Everything the command reports, as JSON-ready values (times in UTC, ISO 8601)."""
    states = selectors.state_counts(cap=cap)
    overdue = selectors.overdue_count(now=now, cap=cap)
    oldest = selectors.oldest_overdue(now=now)
    since = selectors.alive_since(now)
    workers = []
    for worker in selectors.workers():
        workers.append(
            {
                "id": str(worker.id),
                "name": worker.name,
                "host": worker.hostname,
                "pid": worker.pid,
                "executor": worker.executor,
                "concurrency": worker.concurrency,
                "handlers": list(worker.handlers or []),
                "queues": list(worker.queues or []),
                "alive": worker.heartbeat_at >= since,
                "heartbeat_age_seconds": round((now - worker.heartbeat_at).total_seconds(), 3),
                "in_flight": worker.in_flight,
                "held": Alarm.objects.held_by(worker.id).count(),
                "stopping": worker.stopping,
            }
        )
    return {
        "now": _utc(now),
        "database": str(alarm_settings.DATABASE),
        "states": {
            state: {"count": counted.value, "capped": counted.capped}
            for state, counted in states.items()
        },
        "overdue": {
            "count": overdue.value,
            "capped": overdue.capped,
            "oldest": None
            if oldest is None
            else {
                "id": str(oldest.id),
                "handler": oldest.handler,
                "due_at": _utc(oldest.due_at),
                "age_seconds": round((now - oldest.due_at).total_seconds(), 3),
            },
        },
        "next_due": [
            {"id": str(alarm.id), "handler": alarm.handler, "due_at": _utc(alarm.due_at)}
            for alarm in selectors.next_due(now=now, limit=upcoming)
        ],
        "handlers": selectors.active_by_handler(),
        "workers": workers,
        "failures_last_hour": [
            {
                "handler": row.handler,
                "failures": row.failures,
                "last_failure_at": _utc(row.last_failure_at),
                "last_error": row.last_error,
            }
            for row in selectors.failing_handlers(now=now, window=FAILURE_WINDOW, limit=20)
        ],
    }


class Command(AlarmsCommand):
    help = (
        "Show the state of the alarms and the workers: counts per state and per handler, the "
        "next due alarms, overdue alarms and the oldest one's age, live and dead workers with "
        "their heartbeat age and what each holds, failures in the last hour by handler. Exit "
        "status 0, or 1 when the database cannot be read."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON object instead of text (times in UTC, ISO 8601).",
        )
        parser.add_argument(
            "--next",
            type=positive_int,
            default=5,
            metavar="N",
            help="How many of the next due alarms to list (default: 5).",
        )
        parser.add_argument(
            "--count-cap",
            type=positive_int,
            default=COUNT_CAP,
            metavar="N",
            help=(
                f"Stop counting each state at N rows (default: {COUNT_CAP:,}); a capped count "
                "is shown as N+."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with connections[str(alarm_settings.DATABASE)].cursor():
                pass
            report = gather(now=clock.now(), cap=options["count_cap"], upcoming=options["next"])
        except DatabaseError as exc:
            raise CommandError(f"cannot read the alarms' database: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(render(report))


def _count(entry: dict[str, Any]) -> str:
    return f"{entry['count']:,}{'+' if entry['capped'] else ''}"


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    now = datetime.fromisoformat(report["now"])
    lines = [f"Alarms in database {report['database']!r} at {report['now']}"]
    lines.append(
        "  " + "   ".join(f"{state} {_count(report['states'][state])}" for state in State.values)
    )
    overdue = report["overdue"]
    oldest = overdue["oldest"]
    if overdue["count"]:
        age = span(timedelta(seconds=oldest["age_seconds"]))
        lines.append(
            f"Overdue: {_count(overdue)}; the oldest is {age} late: "
            f"{oldest['id']} {oldest['handler']}"
        )
    else:
        lines.append("Overdue: none")
    lines.append("Next due:" if report["next_due"] else "Next due: nothing scheduled")
    for item in report["next_due"]:
        due = datetime.fromisoformat(item["due_at"])
        lines.append(
            f"  {item['due_at']}  in {span(due - now):<12} {item['handler']}  {item['id']}"
        )
    if report["handlers"]:
        lines.append("Active alarms by handler:")
        width = max(len(name) for name in report["handlers"])
        lines.append(f"  {'handler':<{width}}  " + "  ".join(f"{s:>9}" for s in ACTIVE_STATES))
        for name, counts in report["handlers"].items():
            cells = "  ".join(f"{counts.get(state, 0):>9,}" for state in ACTIVE_STATES)
            lines.append(f"  {name:<{width}}  {cells}")
    workers = report["workers"]
    alive = sum(1 for worker in workers if worker["alive"])
    lines.append(f"Workers: {alive} alive, {len(workers) - alive} dead")
    for worker in workers:
        lines.append(
            f"  {'alive' if worker['alive'] else 'dead ':5}  {worker['name']}  "
            f"{worker['executor']} x{worker['concurrency']}  heartbeat "
            f"{span(timedelta(seconds=worker['heartbeat_age_seconds']))} ago  "
            f"holds {worker['held']:,}, {worker['in_flight']:,} in flight"
            f"{'  stopping' if worker['stopping'] else ''}"
            f"  handlers: {', '.join(worker['handlers']) or 'all'}"
            f"  queues: {', '.join(worker['queues']) or 'all'}"
        )
    failures = report["failures_last_hour"]
    lines.append("Failures in the last hour:" if failures else "Failures in the last hour: none")
    for row in failures:
        error = row["last_error"].splitlines()[0][:100] if row["last_error"] else ""
        lines.append(f"  {row['handler']}: {row['failures']:,} (last: {error})")
    return "\n".join(lines)
