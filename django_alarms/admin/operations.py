"""The operations behind the admin's actions and buttons: each fetches rows and calls the
service layer, and says what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import (
    HttpRequest,
)
from django.utils.text import get_text_list
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_alarms import alarms
from django_alarms.models import Alarm
from django_alarms.templatetags.alarms_admin import (
    moment,
)
from django_alarms.types import ALLOWED_FROM, State

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


# -- the operations behind the actions and the buttons ---------------------------------------


@dataclass(frozen=True)
class Operation:
    """One change an operator can make, with its permission and words; the states it is
    offered from are those of its service (``service``, a key of ``types.ALLOWED_FROM``)."""

    name: str
    permission: str
    service: str
    call: Callable[..., Alarm | int]
    done: Callable[[int], str]
    #: Why an alarm in another state is skipped, with ``%(states)s`` for the eligible ones.
    refusal: StrOrPromise
    log: Callable[[Alarm, dict[str, Any]], str]

    @property
    def eligible(self) -> tuple[State, ...]:
        return ALLOWED_FROM[self.service]

    @property
    def refused(self) -> str:
        """The refusal, naming the eligible states: "only failed or cancelled alarms can be
        retried"."""
        states = get_text_list([str(State(state).label) for state in self.eligible])
        return str(self.refusal) % {"states": states}


def _log_retry(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Retried now from the admin (was %(state)s).") % {"state": before.state}


def _log_run(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Made due now from the admin (was due at %(due)s).") % {
        "due": moment(before.due_at)
    }


def _log_cancel(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Cancelled from the admin (was %(state)s).") % {"state": before.state}


def _log_reschedule(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Rescheduled from the admin to %(new)s (was %(state)s, due at %(old)s).") % {
        "new": moment(options["at"]),
        "state": before.state,
        "old": moment(before.due_at),
    }


def _cancel(alarm: Alarm, *, request: HttpRequest) -> int:
    return alarms.cancel(alarm, reason=f"cancelled in the admin by {request.user}"[:255])


OPERATIONS = {
    "retry": Operation(
        name="retry",
        permission="retry",
        service="retry",
        call=lambda alarm, **options: alarms.retry(alarm),
        done=lambda count: ngettext(
            "Retried %(count)d alarm: it is scheduled again, due now.",
            "Retried %(count)d alarms: they are scheduled again, due now.",
            count,
        ),
        refusal=_("only %(states)s alarms can be retried"),
        log=_log_retry,
    ),
    "run": Operation(
        name="run",
        permission="run",
        service="run_now",
        call=lambda alarm, **options: alarms.run_now(alarm),
        done=lambda count: ngettext(
            "Made %(count)d alarm due now: a worker delivers it at once.",
            "Made %(count)d alarms due now: workers deliver them at once.",
            count,
        ),
        refusal=_("only %(states)s alarms can be run now"),
        log=_log_run,
    ),
    "cancel": Operation(
        name="cancel",
        permission="cancel",
        service="cancel",
        call=lambda alarm, request, **options: _cancel(alarm, request=request),
        done=lambda count: ngettext(
            "Cancelled %(count)d alarm.", "Cancelled %(count)d alarms.", count
        ),
        refusal=_("only %(states)s alarms can be cancelled"),
        log=_log_cancel,
    ),
    "reschedule": Operation(
        name="reschedule",
        permission="reschedule",
        service="reschedule",
        call=lambda alarm, at, **options: alarms.reschedule(alarm, at=at),
        done=lambda count: ngettext(
            "Rescheduled %(count)d alarm.", "Rescheduled %(count)d alarms.", count
        ),
        refusal=_("only %(states)s alarms can be rescheduled"),
        log=_log_reschedule,
    ),
}
