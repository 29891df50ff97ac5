"""Plain data passed between the layers: states, outcomes, the handler's context and answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db import models
from django.utils.translation import gettext_lazy as _

from django_alarms.validation import DEFAULT_QUEUE

if TYPE_CHECKING:
    from django_alarms.recurrence import Recurrence


class State(models.TextChoices):
    SCHEDULED = "scheduled", _("scheduled")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")
    PAUSED = "paused", _("paused")


class Outcome(models.TextChoices):
    OK = "ok", _("ok")
    RETRY = "retry", _("retry")
    ERROR = "error", _("error")
    TIMEOUT = "timeout", _("timeout")
    LOST = "lost", _("lost")


#: States in which an alarm counts as *active* for the one-per-(key, name) rule.
ACTIVE_STATES = (State.SCHEDULED, State.RUNNING, State.PAUSED)
#: States an alarm never leaves by itself.
FINAL_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

#: The states from which each change of the service layer applies, by the name of its function
#: in ``alarms.py``, in the order messages name them; the admin offers its actions from the
#: same states. From any other state the change raises ``InvalidTransition``, with one
#: exception: ``cancel`` of a running alarm asks for it (CANCEL_REQUESTED_FROM), and of a
#: cancelled alarm does nothing.
ALLOWED_FROM: Mapping[str, tuple[State, ...]] = MappingProxyType(
    {
        "cancel": (State.SCHEDULED, State.FAILED, State.PAUSED),
        "retry": (State.FAILED, State.CANCELLED),
        "run_now": (State.SCHEDULED,),
        "reschedule": (State.SCHEDULED, State.PAUSED, State.FAILED, State.CANCELLED),
        "pause": (State.SCHEDULED,),
        "resume": (State.PAUSED,),
    }
)
#: States in which ``cancel`` only asks: the current attempt ends, and the alarm is then
#: cancelled instead of being retried or moved to its next occurrence.
CANCEL_REQUESTED_FROM = (State.RUNNING,)


@dataclass(frozen=True, slots=True)
class AlarmContext:
    """What a handler receives: plain data, picklable, no ORM.

    ``due_at`` is the intended time of this delivery (for a recurring alarm, the occurrence
    being delivered); ``attempt`` counts from 1 within the current attempt budget, so a handler
    knows it is on its last try when ``attempt == max_attempts``.
    """

    id: UUID
    handler: str
    key: str
    name: str
    payload: Any
    due_at: datetime
    attempt: int
    max_attempts: int
    created_at: datetime
    recurrence: Recurrence | None = None
    last_error: str = ""

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


#: A Retry's payload (or a Completion's) when it keeps the alarm's own.
UNCHANGED: Any = object()


class Retry(Exception):
    """A handler's answer "deliver me again later".

    Return it (or raise it) from a handler::

        return alarms.Retry(delay=timedelta(minutes=5))
        return alarms.Retry(at=tomorrow_9am, payload={"step": 2})

    The attempt is recorded with outcome ``retry``. The alarm is due again after ``delay``
    (a timedelta or seconds, default: the handler's backoff) or at ``at``, with ``payload``
    replacing the old one when given. A retry uses up an attempt: once ``max_attempts`` is
    reached the alarm fails instead of looping for ever.
    """

    def __init__(
        self,
        delay: timedelta | float | None = None,
        *,
        at: datetime | None = None,
        payload: Any = UNCHANGED,
        reason: str = "",
    ) -> None:
        super().__init__(reason or "retry requested")
        if delay is not None and at is not None:
            raise TypeError("Retry() takes delay or at, not both")
        if delay is not None and not isinstance(delay, timedelta):
            delay = timedelta(seconds=delay)
        self.delay: timedelta | None = delay
        self.at = at
        self.payload = payload
        self.reason = reason

    @property
    def replaces_payload(self) -> bool:
        return self.payload is not UNCHANGED


class Fail(Exception):
    """Raise from a handler to fail the alarm now, without retrying.

    ``raise alarms.Fail("no such account")``: the attempt is recorded with outcome ``error`` and
    the message, and the alarm is ``failed`` whatever attempts remain (a recurring alarm goes on
    with its next occurrence).
    """


@dataclass(frozen=True, slots=True)
class Spec:
    """One alarm for :func:`django_alarms.alarms.schedule_many`; the arguments of ``schedule``."""

    handler: Any
    payload: Any = None
    at: datetime | None = None
    delay: timedelta | float | None = None
    key: str = ""
    name: str = ""
    id: UUID | str | None = None
    if_exists: str = "error"
    max_attempts: int | None = None
    timeout: timedelta | float | None = None
    priority: int = 0
    queue: str = DEFAULT_QUEUE


__all__ = [
    "ACTIVE_STATES",
    "ALLOWED_FROM",
    "CANCEL_REQUESTED_FROM",
    "FINAL_STATES",
    "AlarmContext",
    "Fail",
    "Outcome",
    "Retry",
    "Spec",
    "State",
]
