"""The operations behind the admin's actions and buttons: what each one may change, what it
will do to each selected alarm (the confirmation page shows it before it happens), the call
into the service layer, and the words that report it afterwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.models import Count
from django.http import HttpRequest
from django.utils.text import get_text_list
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_alarms import alarms, clock
from django_alarms.models import Alarm, Attempt
from django_alarms.templatetags.alarms_admin import moment
from django_alarms.types import ACTIVE_STATES, ALLOWED_FROM, State

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: The alarms the admin deletes: the ones an operator has to look at. Succeeded alarms are
#: purged by the workers after KEEP_SUCCEEDED; scheduled, running and paused ones never are.
DELETABLE = (State.FAILED, State.CANCELLED)


@dataclass(frozen=True)
class Operation:
    """One change an operator can make: its permission (``has_<permission>_permission`` of
    the alarm admin), the states it applies to (those of its service, a key of
    ``types.ALLOWED_FROM``, unless ``states`` says), what it will do to an alarm
    (``effect``), the service call, and its words."""

    name: str
    permission: str
    service: str
    call: Callable[..., Any]
    #: The report, with ``%(alarms)s`` ("2 scheduled alarms and 1 paused alarm").
    done: Callable[[int], str]
    #: Why an alarm in another state is skipped, with ``%(states)s`` for the eligible ones.
    refusal: StrOrPromise
    log: Callable[[Alarm, dict[str, Any]], str]
    effect: Callable[[Alarm, dict[str, Any]], str]
    label: StrOrPromise
    #: The confirmation page's question and button, with ``%(count)d``.
    question: Callable[[int], str]
    button: Callable[[int], str]
    #: Whether the button of an alarm's page asks first (destructive, or brings an alarm back).
    confirm: bool = True
    states: tuple[State, ...] = ()
    #: Whether the change may clash with another active alarm of the same key and name.
    reopens: Callable[[Alarm], bool] = field(default=lambda alarm: False)

    @property
    def eligible(self) -> tuple[State, ...]:
        return self.states or ALLOWED_FROM[self.service]

    @property
    def refused(self) -> str:
        """The refusal, naming the eligible states: "only failed or cancelled alarms can be
        retried"."""
        states = get_text_list([str(State(state).label) for state in self.eligible])
        return str(self.refusal) % {"states": states}


# -- what the operations will do, and did -----------------------------------------------------


def alarms_by_state(states: Iterable[str]) -> str:
    """ "2 scheduled alarms and 1 paused alarm", in the order of the states' lifecycle."""
    counts = Counter(states)
    parts = [
        ngettext("%(count)d %(state)s alarm", "%(count)d %(state)s alarms", counts[state])
        % {"count": counts[state], "state": State(state).label}
        for state in State.values
        if counts[state]
    ]
    parts += [  # a state this version does not know (a row written by a newer one)
        ngettext("%(count)d %(state)s alarm", "%(count)d %(state)s alarms", count)
        % {"count": count, "state": state}
        for state, count in sorted(counts.items())
        if state not in State.values
    ]
    return get_text_list(parts, gettext("and"))


@dataclass
class Plan:
    """What an operation will do to the selected alarms, computed with the service layer's
    rules before anything is written: ``change`` (each alarm with what will happen to it),
    ``ineligible`` (in a state the operation does not apply to) and ``refused`` (each with the
    reason the service would give)."""

    operation: Operation
    change: list[tuple[Alarm, str]]
    ineligible: list[Alarm]
    refused: list[tuple[Alarm, str]]
    #: Attempts per alarm id (for the delete operation, which deletes them too).
    attempts: dict[Any, int]

    @property
    def skip(self) -> list[tuple[Alarm, str]]:
        """Every alarm left alone, with the reason."""
        return [(alarm, self.operation.refused) for alarm in self.ineligible] + self.refused


def plan(operation: Operation, rows: Sequence[Alarm], **options: Any) -> Plan:
    """Sort ``rows`` into what ``operation`` changes and what it skips, and why: an alarm in a
    state the operation does not apply to, or (for a retry, or a reschedule of a failed or
    cancelled alarm) one whose key and name another active alarm holds, or that another
    selected alarm takes first: the service (``alarms.retry()``) would refuse it."""
    change: list[tuple[Alarm, str]] = []
    ineligible: list[Alarm] = []
    refused: list[tuple[Alarm, str]] = []
    reopening = [
        alarm
        for alarm in rows
        if alarm.state in operation.eligible and alarm.name and operation.reopens(alarm)
    ]
    holders = _active_holders(reopening)
    taken: dict[tuple[str, str], Alarm] = {}
    for alarm in rows:
        if alarm.state not in operation.eligible:
            ineligible.append(alarm)
            continue
        if alarm.name and operation.reopens(alarm):
            pair = (alarm.key, alarm.name)
            holder = holders.get(pair)
            if holder is not None:
                refused.append(
                    (
                        alarm,
                        gettext(
                            "alarm %(id)s, %(state)s, holds the same key and name: cancel it first"
                        )
                        % {"id": holder.pk, "state": holder.state},
                    )
                )
                continue
            if pair in taken:
                refused.append(
                    (
                        alarm,
                        gettext(
                            "alarm %(id)s, selected too, has the same key and name and goes "
                            "first: one active alarm per key and name"
                        )
                        % {"id": taken[pair].pk},
                    )
                )
                continue
            taken[pair] = alarm
        change.append((alarm, operation.effect(alarm, options)))
    attempts: dict[Any, int] = {}
    if operation.name == "delete" and change:
        attempts = dict(
            Attempt.objects.filter(alarm_id__in=[alarm.pk for alarm, _effect in change])
            .order_by()
            .values("alarm_id")
            .annotate(count=Count("id"))
            .values_list("alarm_id", "count")
        )
    return Plan(
        operation=operation,
        change=change,
        ineligible=ineligible,
        refused=refused,
        attempts=attempts,
    )


def _active_holders(rows: Sequence[Alarm]) -> dict[tuple[str, str], Alarm]:
    """The active alarms that hold the (key, name) of ``rows`` (failed or cancelled ones,
    so never active themselves): one query."""
    if not rows:
        return {}
    pairs = {(alarm.key, alarm.name) for alarm in rows}
    found = Alarm.objects.filter(
        state__in=ACTIVE_STATES,
        key__in={key for key, _name in pairs},
        name__in={name for _key, name in pairs},
    ).only("id", "key", "name", "state")
    return {(alarm.key, alarm.name): alarm for alarm in found if (alarm.key, alarm.name) in pairs}


# -- the operations ---------------------------------------------------------------------------


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


def _log_pause(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Paused from the admin (was due at %(due)s).") % {"due": moment(before.due_at)}


def _log_resume(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Resumed from the admin (was due at %(due)s).") % {"due": moment(before.due_at)}


def _log_delete(before: Alarm, options: dict[str, Any]) -> str:
    return gettext("Deleted from the admin (was %(state)s, due at %(due)s).") % {
        "state": before.state,
        "due": moment(before.due_at),
    }


def _cancel(alarm: Alarm, *, request: HttpRequest) -> int:
    return alarms.cancel(alarm, reason=f"cancelled in the admin by {request.user}"[:255])


def _fresh_budget(alarm: Alarm) -> str:
    return ngettext(
        "a fresh budget of %(count)d attempt",
        "a fresh budget of %(count)d attempts",
        alarm.max_attempts,
    ) % {"count": alarm.max_attempts}


def _effect_retry(alarm: Alarm, options: dict[str, Any]) -> str:
    text = gettext("scheduled again, due now, with %(budget)s") % {"budget": _fresh_budget(alarm)}
    if alarm.state == State.CANCELLED:
        reason = alarm.cancel_reason or gettext("no reason recorded")
        text += "; " + gettext("it was cancelled (%(reason)s)") % {"reason": reason}
    return text


def _effect_run(alarm: Alarm, options: dict[str, Any]) -> str:
    text = gettext("due now instead of %(due)s") % {"due": moment(alarm.due_at)}
    if alarm.is_recurring:
        text += "; " + gettext("the schedule goes on after this occurrence")
    return text


def _effect_cancel(alarm: Alarm, options: dict[str, Any]) -> str:
    if alarm.is_recurring and alarm.state != State.FAILED:
        return gettext("cancelled, with all its next occurrences")
    return gettext("cancelled")


def _effect_reschedule(alarm: Alarm, options: dict[str, Any]) -> str:
    at = options.get("at")
    when = moment(at) if at is not None else gettext("the new time")
    if alarm.state in (State.FAILED, State.CANCELLED):
        return gettext("scheduled again at %(at)s, with %(budget)s") % {
            "at": when,
            "budget": _fresh_budget(alarm),
        }
    return gettext("due at %(at)s") % {"at": when}


def _effect_pause(alarm: Alarm, options: dict[str, Any]) -> str:
    return gettext("paused: not delivered until it is resumed")


def _effect_resume(alarm: Alarm, options: dict[str, Any]) -> str:
    """What :func:`alarms.resume` will do, by its rules."""
    now = clock.now()
    if alarm.is_recurring and alarm.due_at <= now:
        return gettext("scheduled at its next occurrence after now")
    if alarm.due_at <= now:
        return gettext("scheduled, due at once (it was due at %(due)s)") % {
            "due": moment(alarm.due_at)
        }
    return gettext("scheduled, due at %(due)s") % {"due": moment(alarm.due_at)}


def _effect_delete(alarm: Alarm, options: dict[str, Any]) -> str:
    return gettext("deleted, with its attempts")


def _reopens(alarm: Alarm) -> bool:
    return alarm.state in (State.FAILED, State.CANCELLED)


OPERATIONS = {
    "retry": Operation(
        name="retry",
        permission="retry",
        service="retry",
        call=lambda alarm, **options: alarms.retry(alarm),
        done=lambda count: ngettext(
            "Retried %(alarms)s: it is scheduled again, due now.",
            "Retried %(alarms)s: they are scheduled again, due now.",
            count,
        ),
        refusal=_("only %(states)s alarms can be retried"),
        log=_log_retry,
        effect=_effect_retry,
        label=_("Retry now"),
        question=lambda count: ngettext(
            "Retry this alarm now?", "Retry these %(count)d alarms now?", count
        ),
        button=lambda count: ngettext(
            "Yes, retry %(count)d alarm", "Yes, retry %(count)d alarms", count
        ),
        reopens=_reopens,
    ),
    "run": Operation(
        name="run",
        permission="run",
        service="run_now",
        call=lambda alarm, **options: alarms.run_now(alarm),
        done=lambda count: ngettext(
            "Made %(alarms)s due now: a worker delivers it at once.",
            "Made %(alarms)s due now: workers deliver them at once.",
            count,
        ),
        refusal=_("only %(states)s alarms can be run now"),
        log=_log_run,
        effect=_effect_run,
        label=_("Run now"),
        question=lambda count: ngettext(
            "Run this alarm now?", "Run these %(count)d alarms now?", count
        ),
        button=lambda count: ngettext(
            "Yes, run %(count)d alarm now", "Yes, run %(count)d alarms now", count
        ),
        confirm=False,
    ),
    "cancel": Operation(
        name="cancel",
        permission="cancel",
        service="cancel",
        call=lambda alarm, request, **options: _cancel(alarm, request=request),
        done=lambda count: gettext("Cancelled %(alarms)s."),
        refusal=_("only %(states)s alarms can be cancelled"),
        log=_log_cancel,
        effect=_effect_cancel,
        label=_("Cancel"),
        question=lambda count: ngettext(
            "Cancel this alarm?", "Cancel these %(count)d alarms?", count
        ),
        button=lambda count: ngettext(
            "Yes, cancel %(count)d alarm", "Yes, cancel %(count)d alarms", count
        ),
    ),
    "reschedule": Operation(
        name="reschedule",
        permission="reschedule",
        service="reschedule",
        call=lambda alarm, at, **options: alarms.reschedule(alarm, at=at),
        done=lambda count: gettext("Rescheduled %(alarms)s."),
        refusal=_("only %(states)s alarms can be rescheduled"),
        log=_log_reschedule,
        effect=_effect_reschedule,
        label=_("Reschedule…"),
        question=lambda count: ngettext(
            "Reschedule this alarm?", "Reschedule these %(count)d alarms?", count
        ),
        button=lambda count: gettext("Reschedule"),
        reopens=_reopens,
    ),
    "pause": Operation(
        name="pause",
        permission="pause",
        service="pause",
        call=lambda alarm, **options: alarms.pause(alarm),
        done=lambda count: ngettext(
            "Paused %(alarms)s: it is not delivered until it is resumed.",
            "Paused %(alarms)s: they are not delivered until they are resumed.",
            count,
        ),
        refusal=_("only %(states)s alarms can be paused"),
        log=_log_pause,
        effect=_effect_pause,
        label=_("Pause"),
        question=lambda count: ngettext(
            "Pause this alarm?", "Pause these %(count)d alarms?", count
        ),
        button=lambda count: ngettext(
            "Yes, pause %(count)d alarm", "Yes, pause %(count)d alarms", count
        ),
        confirm=False,
    ),
    "resume": Operation(
        name="resume",
        permission="pause",
        service="resume",
        call=lambda alarm, **options: alarms.resume(alarm),
        done=lambda count: ngettext(
            "Resumed %(alarms)s: it is scheduled again.",
            "Resumed %(alarms)s: they are scheduled again.",
            count,
        ),
        refusal=_("only %(states)s alarms can be resumed"),
        log=_log_resume,
        effect=_effect_resume,
        label=_("Resume"),
        question=lambda count: ngettext(
            "Resume this alarm?", "Resume these %(count)d alarms?", count
        ),
        button=lambda count: ngettext(
            "Yes, resume %(count)d alarm", "Yes, resume %(count)d alarms", count
        ),
        confirm=False,
    ),
    "delete": Operation(
        name="delete",
        permission="delete_finished",
        service="delete_finished",
        call=lambda alarm, **options: alarms.delete_finished([alarm], states=DELETABLE),
        done=lambda count: ngettext(
            "Deleted %(alarms)s, with %(attempts)s.",
            "Deleted %(alarms)s, with %(attempts)s.",
            count,
        ),
        refusal=_("only %(states)s alarms can be deleted"),
        log=_log_delete,
        effect=_effect_delete,
        label=_("Delete"),
        question=lambda count: ngettext(
            "Delete this alarm and its attempts?",
            "Delete these %(count)d alarms and their attempts?",
            count,
        ),
        button=lambda count: ngettext(
            "Yes, delete %(count)d alarm", "Yes, delete %(count)d alarms", count
        ),
        states=DELETABLE,
    ),
}
