"""The one clock of the service layer and of delivery, which tests can move.

Workers do not use it for claims (those compare with the database's clock); it decides what
"now" means for ``schedule(delay=...)``, for the times that a delivery computes (attempt
records, retry and next-occurrence due times) and for :func:`django_alarms.testing.run_due`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

_frozen: list[datetime] = []


def now() -> datetime:
    """The current time, aware, in UTC (or the frozen time when a test set one)."""
    if _frozen:
        return _frozen[-1]
    return datetime.now(timezone.utc)


@contextmanager
def frozen(at: datetime) -> Iterator[None]:
    """Make :func:`now` return ``at`` inside the block (process-wide, nestable)."""
    if at.tzinfo is None:
        raise ValueError("frozen() needs an aware datetime")
    _frozen.append(at)
    try:
        yield
    finally:
        _frozen.pop()


def advance(delta: timedelta) -> None:
    """Move the innermost frozen time forward by ``delta``."""
    if not _frozen:
        raise RuntimeError("advance() needs a frozen clock")
    _frozen[-1] = _frozen[-1] + delta
