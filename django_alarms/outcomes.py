"""What an attempt comes to and what follows from it, without side effects.

An executor turns a claimed attempt into a :class:`Result` (``delivery.execute``, or
:func:`timed_out` and :func:`lost` for an attempt that did not end by itself);
:func:`decide` turns the claim and its result into a :class:`Completion`, the alarm's next
state (done, retried after backoff, moved to its next occurrence, failed); and
:func:`catch_up` applies a recurring alarm's misfire policy to what a worker claimed. Nothing
here reads or writes the database: ``delivery.record`` writes completions.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone as dj_timezone

from django_alarms.backoff import Backoff
from django_alarms.claims import Claim, unreadable
from django_alarms.conf import alarm_settings
from django_alarms.exceptions import InvalidAlarm
from django_alarms.handlers import HandlerSpec, registry
from django_alarms.recurrence import HORIZON
from django_alarms.types import UNCHANGED, Outcome, Retry, State
from django_alarms.validation import storable, storable_after

logger = logging.getLogger("django_alarms.delivery")


@dataclass(slots=True)
class Result:
    """What one attempt came to, before anything is written."""

    outcome: str
    started_at: datetime
    finished_at: datetime
    error: str = ""
    traceback: str = ""
    retry: Retry | None = None
    final: bool = False  # Fail: give up now, whatever attempts remain
    #: What the handler returned, as JSON text, when it keeps results (a Django task); "".
    value: str = ""
    #: The exception the handler raised, for the log line's ``exc_info`` (never stored).
    exception: BaseException | None = field(default=None, compare=False, repr=False)


class CompletionSignal(enum.Enum):
    """Which signal a completion sends: ``alarm_succeeded``, ``alarm_retrying`` or
    ``alarm_failed`` (the value is the name after ``alarm_``)."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"


@dataclass(slots=True)
class Completion:
    """The write that ends an attempt: the Attempt row and the alarm's next state."""

    claim: Claim
    result: Result
    state: str
    due_at: datetime | None = None
    occurrence_at: datetime | None = None
    fresh_budget: bool = False
    payload: Any = UNCHANGED
    last_error: str = ""
    worker: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (State.SUCCEEDED, State.FAILED)

    @property
    def signal(self) -> CompletionSignal:
        if self.result.outcome == Outcome.OK:
            return CompletionSignal.SUCCEEDED
        if self.state == State.SCHEDULED and not self.fresh_budget:
            return CompletionSignal.RETRYING
        return CompletionSignal.FAILED


def spec_for(claim: Claim) -> HandlerSpec | None:
    return registry.get(claim.handler)


def timed_out(claim: Claim, started: datetime, finished: datetime, limit: float) -> Result:
    return Result(
        Outcome.TIMEOUT,
        started,
        finished,
        error=f"TimeoutError: the handler ran longer than its {limit:g} s timeout",
    )


def lost(claim: Claim, started: datetime, finished: datetime, worker: str) -> Result:
    return Result(
        Outcome.LOST,
        started,
        finished,
        error=(
            f"LostAttempt: worker {worker} stopped renewing its lease before the attempt "
            "finished (it died, froze or lost the database)"
        ),
    )


def _backoff(claim: Claim, spec: HandlerSpec | None) -> timedelta:
    policy: Backoff | Callable[[int], timedelta] | None = spec.backoff if spec else None
    if policy is None:
        policy = alarm_settings.BACKOFF
    if isinstance(policy, Backoff):
        return policy.delay(claim.budget_attempt)
    return policy(claim.budget_attempt)


def aware(at: datetime) -> datetime:
    """``at``, in the current time zone when it is naive (a handler's ``Retry(at=)``)."""
    return dj_timezone.make_aware(at) if dj_timezone.is_naive(at) else at


def _retry_due(answer: Retry, now: datetime, claim: Claim, spec: HandlerSpec | None) -> datetime:
    if answer.at is not None:
        return aware(answer.at)
    return now + (answer.delay if answer.delay is not None else _backoff(claim, spec))


def decide(claim: Claim, result: Result, *, now: datetime, worker: str = "") -> Completion:
    """The alarm's next state after this attempt (no side effects)."""
    spec = spec_for(claim)
    remaining = claim.budget_attempt < claim.max_attempts
    if result.outcome == Outcome.OK:
        return _next_occurrence(claim, result, worker, error="")
    answer = result.retry
    if result.outcome == Outcome.RETRY and answer is not None and remaining:
        try:
            retry_due = storable("Retry()", _retry_due(answer, now, claim, spec))
        except (InvalidAlarm, OverflowError, TypeError, ValueError) as exc:
            # An answer that cannot be applied is a failed attempt of this alarm alone.
            result = replace(result, outcome=Outcome.ERROR, error=f"InvalidAlarm: {exc}")
            result.retry = None
        else:
            return Completion(
                claim,
                result,
                State.SCHEDULED,
                due_at=retry_due,
                occurrence_at=claim.occurrence_at,
                payload=answer.payload if answer.replaces_payload else UNCHANGED,
                last_error=result.error or "retry requested",
                worker=worker,
            )
    if result.outcome == Outcome.RETRY and result.retry is not None:
        error = f"retry requested after the last of {claim.max_attempts} attempts" + (
            f": {result.error}" if result.error else ""
        )
        return _next_occurrence(claim, result, worker, error=error, failed=True)
    if remaining and not result.final:
        due = now if result.outcome == Outcome.LOST else _after_backoff(now, claim, spec)
        return Completion(
            claim,
            result,
            State.SCHEDULED,
            due_at=due,
            occurrence_at=claim.occurrence_at,
            last_error=result.error,
            worker=worker,
        )
    return _next_occurrence(claim, result, worker, error=result.error, failed=True)


def _after_backoff(now: datetime, claim: Claim, spec: HandlerSpec | None) -> datetime:
    """When a failed attempt is tried again; a policy whose delay cannot be applied (it
    raises, or puts the alarm out of storable time) retries at the latest storable time."""
    try:
        return storable_after("backoff", now, _backoff(claim, spec))
    except Exception as exc:
        logger.error(
            "alarm %s: the retry policy of %r gave no usable delay (%s); retrying in 1 hour",
            claim.alarm_id,
            claim.handler,
            exc,
            extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
        )
        return now + timedelta(hours=1)


def _next_occurrence(
    claim: Claim, result: Result, worker: str, *, error: str, failed: bool = False
) -> Completion:
    """End this delivery: a one-off alarm ends; a recurring one moves to its next occurrence.

    The next occurrence follows the scheduled occurrence, never the completion time (no drift).
    """
    final_state = State.FAILED if failed else State.SUCCEEDED
    if claim.recurrence is None:
        return Completion(claim, result, final_state, last_error=error, worker=worker)
    try:
        schedule = claim.schedule
        if schedule is None:  # its stored schedule cannot be read
            raise ValueError(claim.problem or "no schedule")
        upcoming = schedule.next_after(claim.intended_at)
    except Exception as exc:  # a stored schedule that this version cannot read
        problem = claim.problem or unreadable("recurrence", exc)
        return Completion(
            claim,
            result,
            State.FAILED,
            last_error=problem if not error else f"{error}; {problem}",
            worker=worker,
        )
    if upcoming is None:
        if schedule.end_at is None or schedule.end_at > HORIZON:
            # No end_at stopped it: its next occurrence would fall after the latest time an
            # alarm can hold. Say so, rather than end as if the schedule had run its course.
            ended = (
                "the schedule ends: its next occurrence would fall after "
                f"{HORIZON.date().isoformat()} (UTC), the latest time an alarm can hold"
            )
            error = f"{error}; {ended}" if error else ended
        return Completion(claim, result, final_state, last_error=error, worker=worker)
    return Completion(
        claim,
        result,
        State.SCHEDULED,
        due_at=upcoming,
        occurrence_at=upcoming,
        fresh_budget=True,
        last_error=error,
        worker=worker,
    )


def catch_up(
    claims: Sequence[Claim],
    *,
    now: datetime,
    on_missed: Callable[[Claim, int], None] | None = None,
) -> tuple[list[Claim], list[Claim]]:
    """Apply the misfire policy of claimed recurring alarms (``on_missed(claim, count)`` is
    told how many occurrences each one missed).

    Returns ``(to_run, to_skip)``: claims to deliver (a ``once`` catch-up delivers the latest
    missed occurrence) and claims that deliver nothing now (``skip``), whose ``occurrence_at``
    is already moved to the occurrence to resume at (``None``: the schedule has ended).
    """
    to_run: list[Claim] = []
    to_skip: list[Claim] = []
    for item in claims:
        if item.schedule is None or item.occurrence_at is None:
            to_run.append(item)  # one-off; or a schedule that cannot be read: its attempt fails
            continue
        try:
            decision = item.schedule.catch_up(item.occurrence_at, now)
        except Exception as exc:
            to_run.append(replace(item, problem=unreadable("recurrence", exc)))
            continue
        if decision.missed:
            logger.warning(
                "alarm %s missed %d occurrence(s) of its schedule (misfire=%s)",
                item.alarm_id,
                decision.missed,
                item.schedule.misfire,
                extra={"alarm_id": str(item.alarm_id), "handler": item.handler},
            )
            if on_missed is not None:
                on_missed(item, decision.missed)
        if decision.deliver is None:
            to_skip.append(replace(item, occurrence_at=decision.resume))
        elif decision.deliver != item.occurrence_at:
            to_run.append(replace(item, occurrence_at=decision.deliver))
        else:
            to_run.append(item)
    return to_run, to_skip
