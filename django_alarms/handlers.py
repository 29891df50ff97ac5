"""The handler registry: handlers are found by name, never by importing a path from the database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, overload

from django.core.exceptions import ImproperlyConfigured

from django_alarms import validation
from django_alarms.backoff import Backoff
from django_alarms.exceptions import UnknownHandler, invalid

HandlerFunc = Callable[..., Any]
F = TypeVar("F", bound=HandlerFunc)

NAME_MAX_LENGTH = validation.HANDLER_NAME_MAX_LENGTH


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and its delivery policy (``None`` means "use the setting")."""

    name: str
    func: HandlerFunc
    max_attempts: int | None = None
    timeout: timedelta | None = None
    backoff: Backoff | Callable[[int], timedelta] | None = None
    validate: Callable[[Any], Any] | None = None

    @property
    def origin(self) -> str:
        return f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', '?')}"


class Registry:
    """Maps handler names to :class:`HandlerSpec`. One process-wide instance: :data:`registry`."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}
        self._lock = threading.Lock()

    def register(self, spec: HandlerSpec) -> None:
        with self._lock:
            current = self._handlers.get(spec.name)
            # Re-importing the same module (autoreload, a test importing it twice) is fine;
            # two different functions under one name is a configuration error.
            if current is not None and current.origin != spec.origin:
                raise ImproperlyConfigured(
                    f"alarm handler {spec.name!r} is registered twice: by {current.origin} "
                    f"and by {spec.origin}"
                )
            self._handlers[spec.name] = spec

    def unregister(self, name: str) -> None:
        with self._lock:
            self._handlers.pop(name, None)

    def get(self, name: str) -> HandlerSpec | None:
        return self._handlers.get(name)

    def resolve(self, handler: object) -> HandlerSpec:
        """The spec for a handler name or a decorated function; :class:`UnknownHandler` if none."""
        if isinstance(handler, str):
            spec = self._handlers.get(handler)
            if spec is None:
                raise UnknownHandler(
                    f"handler={handler!r}: no alarm handler is registered under this name "
                    f"(registered: {', '.join(sorted(self._handlers)) or 'none'})",
                    field="handler",
                    value=handler,
                )
            return spec
        name = getattr(handler, "alarm_handler", None)
        if isinstance(name, str) and name in self._handlers:
            return self._handlers[name]
        raise UnknownHandler(
            f"handler={handler!r}: not a registered alarm handler (decorate it with "
            "@alarms.handler or pass its registered name)",
            field="handler",
            value=handler,
        )

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


registry = Registry()


def _timeout(value: object) -> timedelta | None:
    if value is None:
        return None
    return validation.seconds("timeout", value, high=validation.MAX_TIMEOUT)


def _max_attempts(value: object) -> int | None:
    if value is None:
        return None
    return validation.whole("max_attempts", value)


def policy(
    max_attempts: object = None, timeout: object = None, backoff: object = None
) -> tuple[int | None, timedelta | None, Backoff | Callable[[int], timedelta] | None]:
    """A delivery policy checked as :func:`handler` checks it (``None``: the setting's);
    :class:`~django_alarms.exceptions.InvalidAlarm` naming the field otherwise."""
    if backoff is not None and not callable(backoff) and not isinstance(backoff, (Backoff, dict)):
        raise invalid("backoff", backoff, "must be a Backoff, a dict of its fields or a callable")
    coerced: Backoff | Callable[[int], timedelta] | None = (
        backoff if backoff is None or callable(backoff) else Backoff.coerce(backoff)
    )
    return _max_attempts(max_attempts), _timeout(timeout), coerced


@overload
def handler(name: F, /) -> F: ...
@overload
def handler(
    name: str | None = None,
    /,
    *,
    max_attempts: int | None = None,
    timeout: timedelta | float | None = None,
    backoff: Backoff | dict[str, float] | Callable[[int], timedelta] | None = None,
    validate: Callable[[Any], Any] | None = None,
) -> Callable[[F], F]: ...
def handler(
    name: str | HandlerFunc | None = None,
    /,
    *,
    max_attempts: int | None = None,
    timeout: timedelta | float | None = None,
    backoff: Backoff | dict[str, float] | Callable[[int], timedelta] | None = None,
    validate: Callable[[Any], Any] | None = None,
) -> Any:
    """Register a function as the handler of alarms with this name.

    ::

        @alarms.handler("send_reminder", max_attempts=5, timeout=30)
        def send_reminder(alarm: alarms.AlarmContext) -> None: ...

    ``name`` defaults to the function's ``module.qualname``. ``max_attempts``, ``timeout`` and
    ``backoff`` (a :class:`~django_alarms.backoff.Backoff`, a dict of its fields, or a callable
    ``attempt -> timedelta``) override the ``ALARMS`` settings for this handler. ``validate``
    is called with the payload when an alarm is scheduled; if it raises, the alarm is rejected
    with :class:`~django_alarms.exceptions.InvalidAlarm` and nothing is written.
    """
    if callable(name):
        return handler()(name)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise invalid("name", name, "a handler name must be a non-empty string")
    if name is not None:
        validation.text("name", name, max_length=NAME_MAX_LENGTH)
    attempts, limit, delays = policy(max_attempts, timeout, backoff)
    if validate is not None and not callable(validate):
        raise invalid("validate", validate, "must be callable")

    def decorator(func: F) -> F:
        handler_name = name or validation.text(
            "name", f"{func.__module__}.{func.__qualname__}", max_length=NAME_MAX_LENGTH
        )
        registry.register(
            HandlerSpec(
                name=handler_name,
                func=func,
                max_attempts=attempts,
                timeout=limit,
                backoff=delays,
                validate=validate,
            )
        )
        func.alarm_handler = handler_name  # type: ignore[attr-defined]
        return func

    return decorator


def autodiscover() -> None:
    """Import ``<app>/alarms.py`` of every installed app so that its handlers register."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("alarms")
