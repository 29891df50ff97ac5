"""Option types shared by the operators' commands (Django does not take a module whose name
starts with ``_`` for a command)."""

from __future__ import annotations

import re
from argparse import ArgumentTypeError
from collections.abc import Callable
from datetime import timedelta

from django.core.management.base import BaseCommand

from django_alarms import __version__
from django_alarms.exceptions import shown


class AlarmsCommand(BaseCommand):
    """The base of the package's commands: ``--version`` prints django-alarms' version."""

    def get_version(self) -> str:
        return f"django-alarms {__version__}"


_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*", re.IGNORECASE)
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
#: The longest span an option takes: ten years, as for the settings' durations.
MAX_SPAN = timedelta(days=3652)


def at_least(low: int) -> Callable[[str], int]:
    """An option type: a whole number, ``low`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ArgumentTypeError(f"{shown(text)} is not a whole number") from None
        if value < low:
            need = "must not be negative" if low == 0 else f"must be at least {low}"
            raise ArgumentTypeError(f"{shown(text)} {need}")
        return value

    return parse


positive_int = at_least(1)
whole = at_least(0)


def span(text: str) -> timedelta:
    """A length of time such as ``90s``, ``5m``, ``2h``, ``30d`` or ``250ms``; a bare number is
    seconds."""
    match = _SPAN.fullmatch(text)
    if match is None:
        raise ArgumentTypeError(
            f"{shown(text)} is not a length of time: write a number and a unit, such as 90s, "
            "5m, 2h or 30d (a bare number is seconds)"
        )
    number, unit = match.groups()
    value = float(number) * _UNITS[(unit or "s").lower()]
    if value > MAX_SPAN:
        raise ArgumentTypeError(f"{shown(text)} is longer than ten years")
    return value


def fraction(text: str) -> float:
    """A share from 0 to 1, or a percentage such as ``5%``."""
    percent = text.strip().endswith("%")
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise ArgumentTypeError(f"{shown(text)} is not a number such as 0.05 or 5%") from None
    if percent:
        value /= 100
    if not 0 <= value <= 1:  # also false for NaN
        raise ArgumentTypeError(f"{shown(text)} must be from 0 to 1 (or 0% to 100%)")
    return value
