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
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_alarms import alarms
from django_alarms.models import Alarm
from django_alarms.templatetags.alarms_admin import (
    moment,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


# -- the operations behind the actions and the buttons ---------------------------------------


@dataclass(frozen=True)
class Operation:
    """One change an operator can make, with its permission, its eligible states and words."""

    name: str
    permission: str
    eligible: tuple[str, ...]
    call: Callable[..., Alarm | int]
    done: Callable[[int], str]
    refused: StrOrPromise
    log: Callable[[Alarm, dict[str, Any]], str]


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
        eligible=tuple(alarms.RETRYABLE),
        call=lambda alarm, **options: alarms.retry(alarm),
        done=lambda count: ngettext(
            "Retried %(count)d alarm: it is scheduled again, due now.",
            "Retried %(count)d alarms: they are scheduled again, due now.",
            count,
        ),
        refused=_("only failed or cancelled alarms can be retried"),
        log=_log_retry,
    ),
    "run": Operation(
        name="run",
        permission="run",
        eligible=tuple(alarms.RUNNABLE),
        call=lambda alarm, **options: alarms.run_now(alarm),
        done=lambda count: ngettext(
            "Made %(count)d alarm due now: a worker delivers it at once.",
            "Made %(count)d alarms due now: workers deliver them at once.",
            count,
        ),
        refused=_("only scheduled alarms can be run now"),
        log=_log_run,
    ),
    "cancel": Operation(
        name="cancel",
        permission="cancel",
        eligible=tuple(alarms.CANCELLABLE),
        call=lambda alarm, request, **options: _cancel(alarm, request=request),
        done=lambda count: ngettext(
            "Cancelled %(count)d alarm.", "Cancelled %(count)d alarms.", count
        ),
        refused=_("only scheduled, failed or paused alarms can be cancelled"),
        log=_log_cancel,
    ),
    "reschedule": Operation(
        name="reschedule",
        permission="reschedule",
        eligible=tuple(alarms.RESCHEDULABLE),
        call=lambda alarm, at, **options: alarms.reschedule(alarm, at=at),
        done=lambda count: ngettext(
            "Rescheduled %(count)d alarm.", "Rescheduled %(count)d alarms.", count
        ),
        refused=_("only scheduled, paused, failed or cancelled alarms can be rescheduled"),
        log=_log_reschedule,
    ),
}
