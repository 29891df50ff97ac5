"""Helpers for testing code that uses django-alarms: deliver what is due, move the clock.

::

    from django_alarms.testing import run_due

    def test_reminder_is_sent(db):
        alarms.schedule("send_reminder", {"account": 7}, delay=timedelta(hours=1))
        assert run_due() == 0                                   # not due yet
        assert run_due(now=timezone.now() + timedelta(hours=1)) == 1

With pytest, ``pytest_plugins = ["django_alarms.testing"]`` (in a ``conftest.py``) adds the
fixtures ``alarms_clock`` and ``alarm_runner``. ``AlarmFactory`` and ``AttemptFactory`` (for
factory-boy, which your tests install) are importable from this module too.

Nothing in the package imports this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone as dj_timezone

from django_alarms import clock, validation
from django_alarms.conf import alarm_settings
from django_alarms.delivery import deliver, rescue
from django_alarms.engines import get_engine
from django_alarms.exceptions import InvalidAlarm, invalid
from django_alarms.validation import storable, storable_after

#: The worker identity of run_due's claims and attempts.
RUN_DUE_WORKER_ID = uuid.UUID("00000000-0000-0000-0000-00000000d0e5")
RUN_DUE_WORKER = "run_due"


def run_due(now: datetime | None = None, *, max_rounds: int = 1000) -> int:
    """Deliver, in this thread, every alarm due at ``now``; return the number of attempts made.

    Retries and recurring occurrences that fall due at ``now`` are delivered too (each round
    claims what is due, until nothing is). Inside, ``now`` is the clock for everything the
    delivery computes: attempt times, retry and next-occurrence due times. Alarms whose lease
    expired by ``now`` get a ``lost`` attempt and are delivered again, as a worker would.
    Handlers' timeouts are not enforced here (the handler runs in the caller's thread).
    """
    when = now if now is not None else clock.now()
    if not isinstance(when, datetime):
        raise invalid("now", when, "must be an aware datetime")
    if dj_timezone.is_naive(when):
        raise invalid("now", when, "must be an aware datetime (it has no time zone)")
    # Leases and retries are computed from `now`: it must leave room for them before the
    # latest storable time.
    when = storable("now", when)  # in UTC: PostgreSQL refuses offsets past 15:59
    try:
        storable_after("now", when, alarm_settings.TIMEOUT + alarm_settings.LEASE_GRACE)
    except InvalidAlarm:
        raise invalid("now", when, "leaves no room for an attempt's lease") from None
    validation.whole("max_rounds", max_rounds)
    db = str(alarm_settings.DATABASE)
    lease = when + alarm_settings.TIMEOUT + alarm_settings.LEASE_GRACE
    engine = get_engine(db)
    made = 0
    with clock.frozen(when):
        for _ in range(max_rounds):
            rescued = rescue(db=db, now=when, worker=RUN_DUE_WORKER)
            claims = engine.claim(worker_id=RUN_DUE_WORKER_ID, now=when, lease_until=lease)
            if not claims and not rescued:
                return made
            made += len(deliver(claims, db=db, now=clock.now, worker=RUN_DUE_WORKER))
    raise RuntimeError(
        f"run_due: alarms were still due after {max_rounds} rounds; a handler keeps asking "
        "for a retry with no delay?"
    )


class Clock:
    """A clock for tests: ``now`` is frozen until moved with :meth:`advance` or :meth:`set`.

    While it is active, ``alarms.schedule(delay=...)`` and ``run_due()`` use it.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or dj_timezone.now()
        self._context: Any = None

    @property
    def now(self) -> datetime:
        return clock.now()

    def advance(self, delta: timedelta | float) -> datetime:
        clock.advance(delta if isinstance(delta, timedelta) else timedelta(seconds=delta))
        return clock.now()

    def set(self, when: datetime) -> datetime:
        clock.advance(when - clock.now())
        return when

    def run_due(self, **kwargs: Any) -> int:
        return run_due(clock.now(), **kwargs)

    def __enter__(self) -> Clock:
        self._context = clock.frozen(self._now)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)


def __getattr__(name: str) -> Any:
    if name in ("AlarmFactory", "AttemptFactory"):
        from django_alarms import _factories

        return getattr(_factories, name)
    raise AttributeError(name)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for users
    pass
else:

    @pytest.fixture
    def alarms_clock() -> Iterator[Clock]:
        """A frozen :class:`Clock` at the current time; move it with ``advance()``."""
        with Clock() as frozen:
            yield frozen

    @pytest.fixture
    def alarm_runner(db: None) -> Callable[..., int]:
        """:func:`run_due`, with the database enabled."""
        return run_due
