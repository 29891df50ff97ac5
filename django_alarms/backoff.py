"""Retry delays: exponential backoff with jitter.

Importable from a settings file (it touches no model), so that ``ALARMS["BACKOFF"]`` may be a
:class:`Backoff` instance.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta

from django_alarms.exceptions import invalid, shown

MAX_DELAY = timedelta(days=3650)
"""The longest delay a :class:`Backoff` may give (``base`` and ``max``): ten years, the
longest duration the ``ALARMS`` setting accepts."""


def _number(field: str, value: object, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(field, value, f"must be {kind}")
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        raise invalid(field, value, "is too large") from None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with proportional jitter.

    The delay before attempt ``n + 1``, after attempt ``n`` failed, is::

        delay = min(max, base * factor ** (n - 1))
        delay = delay * uniform(1 - jitter, 1 + jitter)      # then clamped to [0, max]

    Worked example with the defaults ``base=10 s, factor=2, max=1 h, jitter=0.1``: after the
    first failure the alarm is due again in 9-11 s, after the second in 18-22 s, the third
    36-44 s, ... the ninth 2560 s ± 10 %, and from the tenth on 3600 s at most (the cap).
    Jitter spreads the retries of alarms that failed together (a database outage, a partner's
    API down) so that they do not all come back at the same instant.
    """

    base: float = 10.0
    factor: float = 2.0
    max: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        # Every field is stored as a float: an int factor would make ``factor ** n`` exact
        # integer arithmetic, as slow as it is large.
        for field in ("base", "max"):
            value = getattr(self, field)
            if isinstance(value, timedelta):
                seconds = value.total_seconds()
            else:
                seconds = _number(f"backoff.{field}", value, "a number of seconds or a timedelta")
            if not 0 <= seconds <= MAX_DELAY.total_seconds():  # also false for NaN
                raise invalid(
                    f"backoff.{field}",
                    value,
                    f"must be between 0 and {MAX_DELAY.total_seconds():,.0f} seconds "
                    f"({MAX_DELAY.days:,} days)",
                )
            object.__setattr__(self, field, seconds)
        factor = _number("backoff.factor", self.factor, "a number")
        if not 1 <= factor < math.inf:
            raise invalid("backoff.factor", self.factor, "must be a finite number, at least 1")
        object.__setattr__(self, "factor", factor)
        jitter = _number("backoff.jitter", self.jitter, "a number")
        if not 0 <= jitter <= 1:  # also false for NaN
            raise invalid("backoff.jitter", self.jitter, "must be between 0 and 1")
        object.__setattr__(self, "jitter", jitter)

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> timedelta:
        """The delay after failed attempt number ``attempt`` (1-based, within the budget)."""
        exponent = max(attempt - 1, 0)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = self.max
        raw = min(raw, self.max)
        if self.jitter:
            raw *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return timedelta(seconds=min(max(raw, 0.0), self.max))

    @classmethod
    def coerce(cls, value: object) -> Backoff:
        """Accept a :class:`Backoff` or a dict of its fields (``{"base": 5, "max": 600}``)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = [key for key in value if key not in ("base", "factor", "max", "jitter")]
            if unknown:
                names = ", ".join(sorted(map(shown, unknown)))  # keys of any type
                raise invalid("backoff", value, f"unknown keys: {names}")
            return cls(**value)
        raise invalid("backoff", value, "must be a Backoff or a dict of base/factor/max/jitter")
