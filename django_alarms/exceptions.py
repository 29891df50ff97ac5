"""The one exception hierarchy of django-alarms."""

from __future__ import annotations


class AlarmError(Exception):
    """Base class of every error raised by django-alarms."""


class InvalidAlarm(AlarmError, ValueError):
    """The alarm was rejected before anything was written: the message names the field and value."""

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class UnknownHandler(InvalidAlarm):
    """No handler is registered under this name."""


class LostAttempt(AlarmError):
    """The error of an attempt whose worker stopped renewing its lease before it finished (it
    died, froze or lost the database): what its Attempt row, and a task's result, name."""


class AlarmExists(AlarmError):
    """An active alarm with the same non-empty (key, name) already exists."""

    def __init__(self, message: str, *, existing: object = None) -> None:
        super().__init__(message)
        self.existing = existing


class InvalidTransition(AlarmError):
    """The alarm is not in a state that allows the requested change (for example cancelling a
    running alarm)."""


MAX_SHOWN = 1000
"""How many characters of a rejected value a message shows."""


def shown(value: object) -> str:
    """``repr(value)``, at most :data:`MAX_SHOWN` characters, and never an error of its own:
    an integer with more digits than Python prints, or a payload nested thousands deep, still
    gets a message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError, MemoryError):
        text = f"<{type(value).__name__} that cannot be shown>"
    except Exception as exc:  # a user object whose __repr__ raises
        text = f"<{type(value).__name__}: repr() raised {type(exc).__name__}>"
    if len(text) > MAX_SHOWN:
        text = f"{text[: MAX_SHOWN - 30]}... ({len(text):,} characters)"
    return text


def invalid(field: str, value: object, problem: str) -> InvalidAlarm:
    """Build an :class:`InvalidAlarm` whose message names the field and the value (shortened,
    see :func:`shown`)."""
    return InvalidAlarm(f"{field}={shown(value)}: {problem}", field=field, value=value)
