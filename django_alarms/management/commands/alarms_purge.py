"""``manage.py alarms_purge``: delete finished alarms and their attempts, in short batches."""

from __future__ import annotations

import json
import sys
import time
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError

from django_alarms import alarms
from django_alarms.exceptions import InvalidAlarm, shown
from django_alarms.management.commands._options import AlarmsCommand, positive_int, span
from django_alarms.types import FINAL_STATES


def _states(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    for name in chosen:
        if name not in FINAL_STATES:
            raise ArgumentTypeError(
                f"{shown(name)} is not a state that can be purged: choose among "
                f"{', '.join(FINAL_STATES)} (scheduled, running and paused alarms are never "
                "purged)"
            )
    if not chosen:
        raise ArgumentTypeError("give at least one state, e.g. --state succeeded")
    return chosen


class Command(AlarmsCommand):
    help = (
        "Delete finished alarms (succeeded, failed, cancelled) that finished before a given "
        "age, with their attempts, in batches that keep each transaction short. Scheduled, "
        "running and paused alarms are never touched. Exit status 0, or 1 when the database "
        "fails."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--state",
            type=_states,
            action="append",
            metavar="STATE[,STATE]",
            help="Which finished alarms: succeeded, failed, cancelled (repeatable; default: "
            "all three).",
        )
        parser.add_argument(
            "--older-than",
            type=span,
            required=True,
            metavar="SPAN",
            help="Only alarms that finished longer ago than this, e.g. 30d or 12h.",
        )
        parser.add_argument(
            "--handler",
            action="append",
            default=[],
            metavar="NAME",
            help="Only the alarms of this handler (repeatable).",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=1_000,
            metavar="N",
            help="Alarms deleted per transaction (default: 1,000; at most 100,000).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        states = sorted({s for group in options["state"] or [list(FINAL_STATES)] for s in group})
        tty = not options["json"] and self.stdout.isatty()
        began = time.monotonic()
        longest = 0.0
        done = 0
        last = time.monotonic()

        def on_batch(count: int) -> None:
            nonlocal done, longest, last
            moment = time.monotonic()
            longest = max(longest, moment - last)
            last = moment
            done += count
            if tty:
                rate = done / max(moment - began, 1e-9)
                sys.stdout.write(f"\rdeleted {done:,} alarm(s), {rate:,.0f}/s")
                sys.stdout.flush()

        try:
            total = alarms.purge(
                states=states,
                older_than=options["older_than"],
                handlers=options["handler"],
                batch_size=options["batch_size"],
                dry_run=options["dry_run"],
                on_batch=on_batch,
            )
        except InvalidAlarm as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(
                f"the database failed after {done:,} alarm(s) were deleted: {exc}"
            ) from exc
        if tty and done:
            sys.stdout.write("\n")
        seconds = time.monotonic() - began
        if options["json"]:
            report = {
                "dry_run": options["dry_run"],
                "states": states,
                "handlers": options["handler"],
                "older_than_seconds": options["older_than"].total_seconds(),
                "alarms": total,
                "seconds": round(seconds, 3),
                "longest_batch_seconds": round(longest, 3),
            }
            self.stdout.write(json.dumps(report))
            return
        if options["verbosity"] == 0:
            return
        what = f"{'/'.join(states)} alarm(s)"
        if options["handler"]:
            what += f" of {', '.join(options['handler'])}"
        if options["dry_run"]:
            self.stdout.write(f"would delete {total:,} {what} (dry run: nothing deleted)")
        else:
            self.stdout.write(
                f"deleted {total:,} {what} with their attempts in {seconds:.1f} s "
                f"(longest batch {longest:.2f} s)"
            )
