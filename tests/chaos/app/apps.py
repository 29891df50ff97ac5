"""The fault seams, installed in a worker process by ``ready()`` when its environment asks.

They live here, in test code, so that the product carries no fault switches:

- ``CHAOS_SKEW=<seconds>``: this process's ``time.time`` and ``django_alarms.clock.now`` run
  that far off the machine's clock (a worker on a machine whose clock is wrong). The worker's
  estimate of the database's clock (``django_alarms.worker.clock.DbClock``) reads
  ``time.time``, so the seam tests that the estimate corrects it.
- ``CHAOS_AMBIGUOUS={"<thread name>": <probability>, ...}``: in the named threads, a write to
  the alarm tables that *committed* is followed, with that probability, by the error of a lost
  connection (``OperationalError``), so the worker cannot tell whether its write happened (an
  ambiguous commit). ``MainThread`` claims, ``alarms-heartbeat`` renews
  leases and rescues, ``alarms-recorder`` records completions. Each one is logged in the fault
  timeline (``CHAOS_FAULTS``).
- ``CHAOS_BREAK=may_start``: a mutation, to show that the battery finds the defect it looks
  for: the worker's start check (``Holdings.may_start``) lets every claim start, as before #13
  fixed it; the ``freeze`` scenario must then fail with unexplained duplicates.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from django.apps import AppConfig

TABLES = ("django_alarms_alarm", "django_alarms_attempt")
WRITES = ("update", "insert", "delete", "with")


class ChaosAppConfig(AppConfig):
    name = "tests.chaos.app"
    label = "chaos_app"

    def ready(self) -> None:
        skew = os.environ.get("CHAOS_SKEW")
        if skew:
            install_skew(float(skew))
        if os.environ.get("CHAOS_BREAK") == "may_start":
            from django_alarms.worker.holdings import Holdings

            Holdings.may_start = lambda self, claim: True  # type: ignore[method-assign]
        ambiguous = os.environ.get("CHAOS_AMBIGUOUS")
        if ambiguous:
            install_ambiguous(
                json.loads(ambiguous),
                seed=int(os.environ.get("CHAOS_SEED", "0")) * 100_003 + os.getpid(),
                faults=os.environ.get("CHAOS_FAULTS", ""),
            )


def install_skew(seconds: float) -> None:
    """Shift ``time.time`` and the service layer's clock (``django_alarms.clock.now``) of this
    process: what a machine whose clock is wrong gives Python."""
    from datetime import timedelta

    from django_alarms import clock
    from tests.chaos import ledger  # noqa: F401  (takes the real clock before it is shifted)

    real = time.time
    time.time = lambda: real() + seconds
    now = clock.now
    shift = timedelta(seconds=seconds)
    clock.now = lambda: now() + shift


class _Ambiguous:
    """Decides, per committed write, whether the connection is lost right after it."""

    def __init__(self, odds: dict[str, float], seed: int, faults: str) -> None:
        self.odds = odds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.faults = faults

    def strike(self, connection: Any, what: str) -> None:
        thread = threading.current_thread().name
        odds = self.odds.get(thread, 0.0)
        if not odds:
            return
        with self.lock:
            hit = self.rng.random() < odds
        if not hit:
            return
        from django.db import OperationalError

        from tests.chaos import ledger

        if self.faults:
            ledger.fault(self.faults, "ambiguous", pid=os.getpid(), thread=thread, what=what)
        # The connection object is left as it is: closing it here, inside Django's commit or
        # a cursor's execute, would break Django's own clean-up (a rollback on a closed SQLite
        # connection raises ProgrammingError), which a lost network connection does not do.
        # The worker closes and reopens it on the error, as it would after a real one.
        raise OperationalError(f"chaos: the connection was lost after a committed {what}")


def install_ambiguous(odds: dict[str, float], *, seed: int, faults: str) -> None:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.signals import connection_created

    seam = _Ambiguous(odds, seed, faults)
    original_commit = BaseDatabaseWrapper.commit

    def commit(self: Any) -> None:
        # Only transactions that wrote to the alarm tables (marked by the wrapper below).
        original_commit(self)
        if getattr(self, "_chaos_wrote", False):
            self._chaos_wrote = False
            seam.strike(self, "transaction")

    BaseDatabaseWrapper.commit = commit  # type: ignore[method-assign]

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        result = execute(sql, params, many, context)
        text = sql.lstrip().lower()
        if text.startswith(WRITES) and any(table in text for table in TABLES):
            connection = context["connection"]
            if connection.in_atomic_block:
                connection._chaos_wrote = True
            elif connection.get_autocommit():
                # A statement in autocommit mode has committed when execute returns.
                seam.strike(connection, text.split(None, 1)[0].upper())
        return result

    def on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    connection_created.connect(on_connect, weak=False)
