"""What ``alarms_cancel``, ``alarms_retry``, ``alarms_pause`` and ``alarms_resume`` share: the
selection of alarms, the dry run, and a count of what each change did. Every change is a call
of the service layer (``alarms.cancel``, ``alarms.retry``...), one alarm at a time, each in its
own transaction, exactly as the admin's actions make them."""

from __future__ import annotations

import json
import uuid
from argparse import ArgumentParser, ArgumentTypeError
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError
from django.db.models import Count, QuerySet

from django_alarms import clock
from django_alarms.conf import alarm_settings
from django_alarms.exceptions import InvalidTransition, shown
from django_alarms.management.commands._options import AlarmsCommand, span
from django_alarms.models import Alarm
from django_alarms.types import ALLOWED_FROM, CANCEL_REQUESTED_FROM, State

#: How many alarms a dry run lists (it counts them all).
SHOWN = 20
#: Ids read from the selection at a time.
CHUNK = 1_000


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise ArgumentTypeError(f"{shown(text)} is not an alarm id (a UUID)") from None


def _state(text: str) -> str:
    if text not in State.values:
        raise ArgumentTypeError(
            f"{shown(text)} is not a state: choose among {', '.join(State.values)}"
        )
    return text


class ChangeCommand(AlarmsCommand):
    """One service-layer change applied to every alarm the options select."""

    #: The name of the change in ``alarms.py`` and in ALLOWED_FROM, and its past tense.
    operation = ""
    done = ""

    def change(self, alarm_id: uuid.UUID) -> None:
        raise NotImplementedError

    def applies_from(self) -> tuple[str, ...]:
        states = ALLOWED_FROM[self.operation]
        if self.operation == "cancel":
            states = (*states, *CANCEL_REQUESTED_FROM)
        return tuple(str(state) for state in states)

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--id",
            type=_uuid,
            action="append",
            default=[],
            metavar="UUID",
            help="This alarm (repeatable).",
        )
        parser.add_argument("--key", help="The alarms with this key.")
        parser.add_argument("--name", help="With --key: the alarm with this key and name.")
        parser.add_argument(
            "--handler",
            action="append",
            default=[],
            metavar="NAME",
            help="The alarms of this handler (repeatable).",
        )
        parser.add_argument(
            "--state",
            type=_state,
            action="append",
            default=[],
            metavar="STATE",
            help="The alarms in this state (repeatable; default: every state the change "
            f"applies from: {', '.join(self.applies_from())}).",
        )
        parser.add_argument(
            "--since",
            type=span,
            metavar="SPAN",
            help="The alarms created within this span, e.g. 2h.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would change, and change nothing.",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def select(self, options: dict[str, Any]) -> QuerySet[Alarm]:
        if options["name"] is not None and options["key"] is None:
            raise CommandError("--name selects within a --key: give --key too")
        chosen = [options["id"], options["key"], options["handler"], options["state"]]
        if not any(chosen) and options["since"] is None:
            raise CommandError(
                "select the alarms: --id, --key [--name], --handler, --state or --since "
                "(nothing selects every alarm)"
            )
        qs = Alarm.objects.using(str(alarm_settings.DATABASE)).order_by("due_at", "id")
        if options["id"]:
            qs = qs.filter(pk__in=options["id"])
        if options["key"] is not None:
            qs = qs.filter(key=options["key"])
            if options["name"] is not None:
                qs = qs.filter(name=options["name"])
        if options["handler"]:
            qs = qs.filter(handler__in=options["handler"])
        qs = qs.filter(state__in=options["state"] or self.applies_from())
        if options["since"] is not None:
            qs = qs.filter(created_at__gte=clock.now() - options["since"])
        return qs

    def handle(self, *args: Any, **options: Any) -> None:
        selection = self.select(options)
        try:
            if options["dry_run"]:
                self.dry_run(selection, options)
            else:
                self.apply(selection, options)
        except DatabaseError as exc:
            raise CommandError(f"the database failed: {exc}") from exc

    def dry_run(self, selection: QuerySet[Alarm], options: dict[str, Any]) -> None:
        counts = {
            row["state"]: row["count"]
            for row in selection.values("state").annotate(count=Count("pk")).order_by()
        }
        allowed = self.applies_from()
        would = {state: n for state, n in counts.items() if state in allowed}
        skipped = {state: n for state, n in counts.items() if state not in allowed}
        listed = [
            {
                "id": str(row["id"]),
                "handler": row["handler"],
                "state": row["state"],
                "due_at": row["due_at"].isoformat(timespec="milliseconds"),
            }
            for row in selection.values("id", "handler", "state", "due_at")[:SHOWN]
        ]
        if options["json"]:
            report = {
                "operation": self.operation,
                "dry_run": True,
                "would_change": would,
                "would_skip": skipped,
                "first": listed,
            }
            self.stdout.write(json.dumps(report))
            return
        total = sum(would.values())
        self.stdout.write(
            f"would {self.operation} {total:,} alarm(s){_by_state(would)}"
            + (
                f"; {sum(skipped.values()):,} would be skipped{_by_state(skipped)}"
                if skipped
                else ""
            )
            + " (dry run: nothing changed)"
        )
        for row in listed:
            self.stdout.write(
                f"  {row['id']}  {row['state']:<9}  {row['due_at']}  {row['handler']}"
            )
        if sum(counts.values()) > len(listed):
            self.stdout.write(f"  ... and {sum(counts.values()) - len(listed):,} more")

    def apply(self, selection: QuerySet[Alarm], options: dict[str, Any]) -> None:
        changed: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        requested = 0
        last: uuid.UUID | None = None
        while True:
            page = selection.order_by("pk")
            if last is not None:
                page = page.filter(pk__gt=last)
            rows = list(page.values_list("pk", "state")[:CHUNK])
            if not rows:
                break
            last = rows[-1][0]
            for alarm_id, state in rows:
                try:
                    self.change(alarm_id)
                except InvalidTransition:
                    skipped[state] += 1
                except Alarm.DoesNotExist:
                    skipped["deleted"] += 1
                else:
                    if self.operation == "cancel" and state in CANCEL_REQUESTED_FROM:
                        requested += 1
                    else:
                        changed[state] += 1
        if options["json"]:
            report = {
                "operation": self.operation,
                "dry_run": False,
                "changed": dict(changed),
                "cancel_requested": requested,
                "skipped": dict(skipped),
            }
            self.stdout.write(json.dumps(report))
            return
        text = f"{self.done} {sum(changed.values()):,} alarm(s){_by_state(changed)}"
        if requested:
            text += f"; cancel requested of {requested:,} running (after its current attempt)"
        if skipped:
            text += (
                f"; {sum(skipped.values()):,} skipped{_by_state(skipped)}: no longer in a state "
                f"that {self.operation} applies from"
            )
        self.stdout.write(text)


def _by_state(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items())) + ")"


def command(operation: str, done: str, change: Callable[[uuid.UUID], object], help: str) -> type:
    """A ChangeCommand for one service-layer function."""

    class Command(ChangeCommand):
        def change(self, alarm_id: uuid.UUID) -> None:
            change(alarm_id)

    Command.operation = operation
    Command.done = done
    Command.help = help
    return Command
