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


class AlarmExists(AlarmError):
    """An active alarm with the same non-empty (key, name) already exists."""

    def __init__(self, message: str, *, existing: object = None) -> None:
        super().__init__(message)
        self.existing = existing


class InvalidTransition(AlarmError):
    """The alarm is not in a state that allows the requested change (for example cancelling a
    running alarm)."""


def invalid(field: str, value: object, problem: str) -> InvalidAlarm:
    """Build an :class:`InvalidAlarm` whose message names the field and the value."""
    return InvalidAlarm(f"{field}={value!r}: {problem}", field=field, value=value)
