"""``manage.py run_alarms``: parse and check the options, set up logging and signals, run."""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import signal
import sys
from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

from django.apps import apps
from django.core.management.base import CommandError

from django_alarms import metrics
from django_alarms.conf import EXECUTORS, MAX_CONCURRENCY, MAX_DURATION, alarm_settings
from django_alarms.exceptions import shown
from django_alarms.handlers import registry
from django_alarms.logs import UTCFormatter
from django_alarms.management.commands._options import AlarmsCommand
from django_alarms.validation import QUEUE_MAX_LENGTH
from django_alarms.worker.runner import SHUTDOWN_TIMEOUT, Options, Runner


def _concurrency(text: str) -> int:
    shown_text = shown(text)
    try:
        value = int(text)
    except ValueError:  # also more digits than int() reads
        raise ArgumentTypeError(f"{shown_text} is not a whole number") from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ArgumentTypeError(f"{shown_text} must be at least 1 and at most {MAX_CONCURRENCY:,}")
    return value


def _seconds(text: str) -> float:
    shown_text = shown(text)
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"{shown_text} is not a number of seconds") from None
    top = MAX_DURATION.total_seconds()
    if not 0 < value <= top:  # also false for NaN
        raise ArgumentTypeError(
            f"{shown_text} must be a positive number of seconds, at most {top:,.0f} (ten years)"
        )
    return value


def _address(text: str) -> tuple[str, int]:
    try:
        return metrics.parse_address(text)
    except ValueError as exc:
        raise ArgumentTypeError(f"{shown(text)} {exc}") from None


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ArgumentTypeError("give at least one handler name, e.g. --handlers send_reminder")
    return names


def _queues(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ArgumentTypeError("give at least one queue name, e.g. --queues default,emails")
    too_long = [name for name in names if len(name) > QUEUE_MAX_LENGTH]
    if too_long:
        raise ArgumentTypeError(
            f"{too_long[0][:40]!r}...: a queue name has at most {QUEUE_MAX_LENGTH} characters"
        )
    return names


#: Python's own thresholds of its cyclic garbage collector, and the worker's. A worker keeps up
#: to MAX_IN_MEMORY armed alarms and their claims alive and allocates a few objects per
#: delivery (Django's TaskResult for a task): with the defaults the collector scans the live
#: ones again every few hundred deliveries. Measured on the tasks herd of 100,000 (benchmarks):
#: worker CPU per task 91.8 to 80.4 us, 0.60x to 0.70x of the schedule() herd, one run each.
PYTHON_GC_THRESHOLDS = (700, 10, 10)
WORKER_GC_THRESHOLDS = (100_000, 50, 1_000)


def _tune_garbage_collector() -> None:
    """Collect less often in a worker, unless the project has set thresholds of its own."""
    if gc.get_threshold() == PYTHON_GC_THRESHOLDS:
        gc.set_threshold(*WORKER_GC_THRESHOLDS)


def _shown_address(address: tuple[str, int] | None) -> str:
    return "none" if address is None else f"{address[0]}:{address[1]}"


def _check_executor(name: str) -> None:
    """The executor's own package must be installed and its app configured (a CommandError
    that says how, not an ImportError's traceback)."""
    info = EXECUTORS[name]
    if not info.requires:
        return
    if importlib.util.find_spec(info.requires) is None:
        then = f'add "{info.requires}" to INSTALLED_APPS and ' if info.app else ""
        raise CommandError(
            f"the {name} executor needs {info.distribution}, which is not installed: "
            f'pip install "django-alarms[{info.extra}]", then {then}configure '
            f"{info.configured_by}"
        )
    if info.app and not apps.is_installed(info.requires):
        raise CommandError(
            f'the {name} executor needs "{info.requires}" in INSTALLED_APPS (and '
            f"{info.configured_by} configured)"
        )


class Command(AlarmsCommand):
    help = (
        "Run an alarms worker: load the alarms due soon, fire each at its due time, record every "
        "attempt. Any number of workers may run against one database."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="Deliver every alarm due now, wait for the attempts, then exit (cron, tests).",
        )
        parser.add_argument(
            "--concurrency",
            type=_concurrency,
            help="Handler threads of the inline executor (default: "
            f'{alarm_settings.CONCURRENCY}, from ALARMS["CONCURRENCY"]).',
        )
        parser.add_argument(
            "--executor",
            choices=tuple(EXECUTORS),
            help=f"Where handlers run (default: {alarm_settings.EXECUTOR}, from "
            'ALARMS["EXECUTOR"]).',
        )
        parser.add_argument(
            "--handlers",
            type=_names,
            help="Only deliver alarms of these handlers (comma-separated names).",
        )
        parser.add_argument(
            "--queues",
            type=_queues,
            help="Only deliver alarms in these queues (comma-separated names; an alarm is in "
            'queue "default" unless it was scheduled in another, as a Django task can be).',
        )
        parser.add_argument(
            "--load-interval",
            type=_seconds,
            help="Seconds between window loads (default: "
            f"{alarm_settings.LOAD_INTERVAL.total_seconds():g}, from "
            'ALARMS["LOAD_INTERVAL"]).',
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=_seconds,
            default=SHUTDOWN_TIMEOUT,
            help="On SIGTERM/SIGINT, seconds to let attempts in flight finish "
            f"(default {SHUTDOWN_TIMEOUT:g}).",
        )
        parser.add_argument(
            "--metrics-port",
            type=_address,
            metavar="[HOST:]PORT",
            help="Serve Prometheus metrics over HTTP on this port (every interface unless a "
            f"host is given; default: {_shown_address(alarm_settings.METRICS_PORT)}, from "
            'ALARMS["METRICS_PORT"]). Needs the prometheus extra.',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        _check_executor(options["executor"] or alarm_settings.EXECUTOR)
        handlers = options["handlers"]
        if handlers:
            unknown = [name for name in handlers if name not in registry]
            if unknown:
                raise CommandError(
                    f"--handlers: no handler registered as {', '.join(map(repr, unknown))} "
                    f"(registered: {', '.join(registry.names()) or 'none'})"
                )
        self._configure_logging(options["verbosity"])
        address = options["metrics_port"] or alarm_settings.METRICS_PORT
        stop_serving = self._serve_metrics(address) if address else None
        load_interval = options["load_interval"]
        runner = Runner(
            Options.from_settings(
                concurrency=options["concurrency"],
                executor=options["executor"],
                handlers=handlers,
                queues=options["queues"],
                load_interval=timedelta(seconds=load_interval) if load_interval else None,
                shutdown_timeout=options["shutdown_timeout"],
                once=options["once"],
                metrics=address is not None,
            )
        )
        self._install_signals(runner)
        _tune_garbage_collector()
        try:
            code = runner.run()
        finally:
            if stop_serving is not None:
                stop_serving()
        if code:
            sys.exit(code)

    def _serve_metrics(self, address: tuple[str, int]) -> Callable[[], None]:
        host, port = address
        if not metrics.available():
            raise CommandError(
                f"--metrics-port: metrics need {metrics.DISTRIBUTION}, which is not installed: "
                f'pip install "django-alarms[{metrics.EXTRA}]"'
            )
        try:
            stop = metrics.serve(address)
        except OSError as exc:
            raise CommandError(
                f"--metrics-port: cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from None
        logging.getLogger("django_alarms.worker").info(
            "serving Prometheus metrics on http://%s:%d/metrics", host, port
        )
        return stop

    def _configure_logging(self, verbosity: int) -> None:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
        package = logging.getLogger("django_alarms")
        package.setLevel(level)
        if not package.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(UTCFormatter())
            package.addHandler(handler)

    def _install_signals(self, runner: Runner) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if runner.stopping.is_set():
                # Second signal: leave at once; leases bring the attempts back.
                os._exit(128 + signum)
            runner.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
