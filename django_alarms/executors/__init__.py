"""Where handlers run. An executor takes claims and reports each attempt's result.

The executors are those of :data:`django_alarms.conf.EXECUTORS`. The worker never imports an
executor's dependencies itself: :func:`get_executor` imports the chosen one lazily (the django-q2
executor imports ``django_q`` only when it is used).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from importlib import import_module
from typing import Protocol

from django_alarms.claims import Claim
from django_alarms.conf import EXECUTORS
from django_alarms.outcomes import Result
from django_alarms.supervision import Supervisor

#: ``on_result(claim, result)``; ``result`` is None when the executor recorded the attempt itself.
ResultCallback = Callable[[Claim, Result | None], None]


class Executor(Protocol):
    """What the worker needs of an executor."""

    name: str
    #: How many seconds before an attempt's due time the executor takes it (``submit`` then
    #: gets the due time as ``at`` and starts the attempt at that moment itself). 0: it starts
    #: what it is given at once, and the worker submits each attempt at its due time.
    lead: float

    def start(self) -> None:
        """Start threads or connections."""

    def submit(self, claim: Claim, at: float | None = None) -> None:
        """Run the claim's attempt at ``at`` (a ``time.monotonic()`` value; None: now), or as
        soon as a slot is free after that."""

    def held(self) -> int:
        """Claims submitted and not yet reported."""

    def take_unstarted(self) -> list[Claim]:
        """Remove and return the claims that were submitted but have not started."""

    def running(self) -> list[Claim]:
        """Claims whose handler is running now."""

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is running; False if ``timeout`` (seconds) ran out first."""

    def stop(self) -> None:
        """Stop accepting work and let idle threads exit."""


def wait_while(idle: threading.Condition, busy: Callable[[], bool], timeout: float) -> bool:
    """With ``idle``'s lock held, wait until ``busy()`` is false; False if ``timeout`` (seconds)
    ran out first. It looks again at least every 0.1 s: not every change is notified."""
    deadline = time.monotonic() + timeout
    while busy():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        idle.wait(min(remaining, 0.1))
    return True


def get_executor(
    name: str,
    *,
    concurrency: int,
    on_result: ResultCallback,
    now: Callable[[], datetime],
    db: str,
    may_start: Callable[[Claim], bool] | None = None,
    supervisor: Supervisor | None = None,
) -> Executor:
    """The executor called ``name`` (a key of ``conf.EXECUTORS``), given the arguments it
    takes. ``may_start(claim)``, when given, is asked right before an attempt starts: False
    drops the claim without starting it (its lease passed). The inline executor's threads run
    under ``supervisor`` (the worker's), or a supervisor of their own."""
    info = EXECUTORS.get(name)
    if info is None:
        known = " or ".join(repr(known) for known in EXECUTORS)
        raise ValueError(f"unknown executor {name!r}: use {known}")
    module, _, class_name = info.path.rpartition(".")
    executor_class = getattr(import_module(f"{__name__}.{module}"), class_name)
    optional = {"db": db, "may_start": may_start, "supervisor": supervisor}
    executor: Executor = executor_class(
        concurrency=concurrency,
        on_result=on_result,
        now=now,
        **{argument: optional[argument] for argument in info.takes},
    )
    return executor
