"""Deliver one claimed attempt and apply the handler's answer: the one path every executor ends in.

Three steps, kept apart so that executors can run them in different places:

1. :func:`execute` builds the :class:`AlarmContext`, calls the handler and returns a
   :class:`Result` (it never raises for a handler's fault and never touches the database);
2. :func:`decide` turns the claim and the result into a :class:`Completion`, the alarm's next
   state (done, retry with backoff, next occurrence, failed), without side effects;
3. :func:`record` writes completions in one short transaction: the :class:`Attempt` rows and the
   fenced updates of the alarms, then sends the signals.

``run_due`` (testing), the worker's inline executor and the django-q executor all call these.
"""

from __future__ import annotations

import enum
import inspect
import logging
import traceback as tb
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from django.db import DatabaseError, transaction
from django.utils import timezone as dj_timezone

from django_alarms import clock
from django_alarms.backoff import Backoff
from django_alarms.claims import Claim, claims_from, unreadable
from django_alarms.conf import alarm_settings
from django_alarms.engines import get_engine
from django_alarms.exceptions import InvalidAlarm, invalid
from django_alarms.handlers import HandlerSpec, registry
from django_alarms.models import Alarm
from django_alarms.recurrence import HORIZON
from django_alarms.signals import (
    alarm_failed,
    alarm_retrying,
    alarm_started,
    alarm_succeeded,
    listened,
)
from django_alarms.supervision import outage
from django_alarms.types import UNCHANGED, AlarmContext, Fail, Outcome, Retry, State
from django_alarms.validation import (
    ERROR_MAX_LENGTH,
    TRACEBACK_MAX_LENGTH,
    payload_json,
    storable,
    storable_after,
    storable_text,
)

logger = logging.getLogger(__name__)


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


def timeout_for(claim: Claim, spec: HandlerSpec | None = None) -> float:
    """The time limit of this attempt in seconds: the alarm's, the handler's, or the setting."""
    if claim.timeout is not None:
        return claim.timeout
    spec = spec if spec is not None else spec_for(claim)
    if spec is not None and spec.timeout is not None:
        return spec.timeout.total_seconds()
    return float(alarm_settings.TIMEOUT.total_seconds())


#: The slots of AlarmContext's fields, set directly (in the order of its fields): a frozen
#: dataclass's ``__init__`` sets each one through ``object.__setattr__``, which costs 0.5 us
#: more per delivery (measured on 2026-12-03: 1.5 against 1.0 us; 4% of the worker's CPU for
#: a one-off delivery).
_CONTEXT_SLOTS = tuple(getattr(AlarmContext, field.name).__set__ for field in fields(AlarmContext))
_new_context = object.__new__


def context_for(claim: Claim) -> AlarmContext:
    """What the handler of ``claim`` receives: the claim's own fields (its intended time, its
    attempt within the budget, its decoded schedule)."""
    context: AlarmContext = _new_context(AlarmContext)
    values = (
        claim.alarm_id,
        claim.handler,
        claim.key,
        claim.name,
        claim.payload,
        claim.occurrence_at or claim.due_at,  # Claim.intended_at, without a property call
        claim.number - claim.budget_start,  # Claim.budget_attempt
        claim.max_attempts,
        claim.created_at,
        claim.schedule,
        claim.last_error,
    )
    for set_slot, value in zip(_CONTEXT_SLOTS, values, strict=True):
        set_slot(context, value)
    return context


@dataclass(frozen=True, slots=True)
class Returned:
    """A handler's answer "done, and this is my result" (``json``: the JSON text of the value,
    kept in the attempt's ``result``). The Django Tasks backend's handlers answer it."""

    json: str


def error_name(exc: BaseException) -> str:
    """How an error's class is named in an attempt's error text: as Python's own traceback
    names it (``ValueError``, ``myapp.payments.Declined``)."""
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _error_text(exc: BaseException) -> str:
    text = f"{error_name(exc)}: {exc}" if str(exc) else error_name(exc)
    return text[:ERROR_MAX_LENGTH]


def execute(
    claim: Claim,
    *,
    now: Callable[[], datetime] = clock.now,
    started: datetime | None = None,
) -> Result:
    """Call the claim's handler and say how it went. Never raises for a handler's fault.
    ``started``: when the attempt started, if the caller already read the clock for it."""
    spec = spec_for(claim)
    if started is None:
        started = now()
    if claim.problem:
        return Result(Outcome.ERROR, started, started, error=claim.problem)
    if spec is None:
        return Result(
            Outcome.ERROR,
            started,
            started,
            error=(
                f"UnknownHandler: no handler is registered under {claim.handler!r} in this "
                "worker (it will be retried: a deploy may bring it)"
            ),
        )
    context = context_for(claim)
    try:
        if listened(alarm_started, Alarm):
            alarm_started.send(sender=Alarm, alarm=context)
        answer = spec.func(context)
        if answer is not None and inspect.isawaitable(answer):
            # An async handler: run it to completion on an event loop of this thread.
            answer = async_to_sync(_awaited)(answer)
    except Retry as exc:
        answer = exc
    except Fail as exc:
        # ``raise Fail() from error``: the error, not the bare Fail, is what went wrong.
        cause = exc.__cause__ if not exc.args and exc.__cause__ is not None else exc
        return Result(
            Outcome.ERROR, started, now(), _error_text(cause), tb.format_exc(), final=True
        )
    except (Exception, SystemExit) as exc:
        if type(exc) is not SystemExit and not isinstance(exc, Exception):
            raise  # a SystemExit of the executor's own (django-q2's time limit)
        return Result(Outcome.ERROR, started, now(), _error_text(exc), tb.format_exc())
    if isinstance(answer, Returned):
        return Result(Outcome.OK, started, now(), value=answer.json)
    if isinstance(answer, Retry):
        problem = _retry_problem(answer, spec, started)
        if problem:
            return Result(Outcome.ERROR, started, now(), problem)
        return Result(Outcome.RETRY, started, now(), error=answer.reason, retry=answer)
    return Result(Outcome.OK, started, now())


def _retry_problem(answer: Retry, spec: HandlerSpec, now: datetime) -> str:
    """Why a handler's Retry cannot be applied (a time that cannot be stored, a new payload
    that could not be stored or that the handler's own validate() rejects), or "" when it
    can."""
    try:
        if answer.at is not None:
            if not isinstance(answer.at, datetime):
                raise invalid("Retry(at=)", answer.at, "must be a datetime")
            storable("Retry(at=)", _aware(answer.at))
        elif answer.delay is not None:
            if not isinstance(answer.delay, timedelta):
                raise invalid("Retry(delay=)", answer.delay, "must be a timedelta")
            # The attempt is recorded a moment after it ends: leave a day of room.
            storable_after("Retry(delay=)", now + timedelta(days=1), answer.delay)
    except InvalidAlarm as exc:
        return f"InvalidAlarm: {exc}"
    if not answer.replaces_payload:
        return ""
    try:
        # What schedule() accepts, no more: JSON every database can store and give back.
        payload_json("Retry(payload=)", answer.payload)
        if spec.validate is not None:
            spec.validate(answer.payload)
    except Exception as exc:
        return f"InvalidAlarm: the payload of Retry() was rejected: {_error_text(exc)}"
    return ""


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


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


def _aware(at: datetime) -> datetime:
    return dj_timezone.make_aware(at) if dj_timezone.is_naive(at) else at


def _retry_due(answer: Retry, now: datetime, claim: Claim, spec: HandlerSpec | None) -> datetime:
    if answer.at is not None:
        return _aware(answer.at)
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


def catch_up(claims: Sequence[Claim], *, now: datetime) -> tuple[list[Claim], list[Claim]]:
    """Apply the misfire policy of claimed recurring alarms.

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
        if decision.deliver is None:
            to_skip.append(replace(item, occurrence_at=decision.resume))
        elif decision.deliver != item.occurrence_at:
            to_run.append(replace(item, occurrence_at=decision.deliver))
        else:
            to_run.append(item)
    return to_run, to_skip


def _attempt(completion: Completion) -> tuple[Any, ...]:
    """The Attempt row of a completion, in :data:`engines.ATTEMPT_COLUMNS` order."""
    claim, result = completion.claim, completion.result
    return (
        claim.alarm_id,
        claim.number,
        result.outcome,
        result.started_at,
        result.finished_at,
        claim.handler,
        claim.intended_at,
        storable_text(result.error),
        storable_text(result.traceback, TRACEBACK_MAX_LENGTH, tail=True),
        completion.worker,
        result.value,
    )


def record(
    completions: Sequence[Completion],
    *,
    db: str,
    now: datetime | None = None,
    fence: dict[str, Any] | None = None,
    on_fenced: Callable[[Completion], None] | None = None,
) -> list[Completion]:
    """Write completions: one transaction, fenced updates, one bulk insert of Attempt rows.

    Returns the completions that were applied. One whose claim is no longer held (the lease
    expired and another worker took the alarm over) changes nothing and is logged, or given to
    ``on_fenced``. ``fence`` adds conditions to every update (the rescue sweep requires the
    lease to be expired still).
    """
    if not completions:
        return []
    now = now or clock.now()
    engine = get_engine(db)
    with transaction.atomic(using=db):
        applied = engine.finish(completions, now=now, fence=fence)
        engine.insert_attempts([_attempt(item) for item in applied])
    if len(applied) != len(completions):
        recorded = {id(item) for item in applied}
        for item in completions:
            if id(item) not in recorded:
                (on_fenced or log_not_held)(item)
    _send_signals(applied)
    return applied


def log_not_held(item: Completion) -> None:
    """The line of a completion that :func:`record` did not write: its claim is no longer held."""
    logger.warning(
        "alarm %s attempt %d: the claim is no longer held by this worker (lease expired and the "
        "alarm was taken over); its outcome %s is not recorded",
        item.claim.alarm_id,
        item.claim.number,
        item.result.outcome,
        extra={"alarm_id": str(item.claim.alarm_id), "handler": item.claim.handler},
    )


def _send_signals(applied: Iterable[Completion]) -> None:
    signals = {
        CompletionSignal.SUCCEEDED: alarm_succeeded,
        CompletionSignal.RETRYING: alarm_retrying,
        CompletionSignal.FAILED: alarm_failed,
    }
    if not any(listened(signal, Alarm) for signal in signals.values()):
        return
    for item in applied:
        signal = signals[item.signal]
        if not listened(signal, Alarm):
            continue
        try:
            context = context_for(item.claim)
        except Exception:  # a stored schedule this version cannot read: the write stands
            logger.exception(
                "alarm %s: no alarm_%s signal sent", item.claim.alarm_id, item.signal.value
            )
            continue
        kwargs: dict[str, Any] = {
            "alarm": context,
            "outcome": item.result.outcome,
            "error": item.result.error,
        }
        if item.signal is CompletionSignal.RETRYING:
            kwargs["due_at"] = item.due_at
        # A receiver's error must not undo or stop the recording of attempts.
        for receiver, error in signal.send_robust(sender=Alarm, **kwargs):
            if isinstance(error, Exception):
                logger.error(
                    "receiver %r of alarm_%s raised %s: %s",
                    receiver,
                    item.signal.value,
                    type(error).__name__,
                    error,
                    exc_info=error,
                )


def deliver(
    claims: Sequence[Claim], *, db: str, now: Callable[[], datetime], worker: str
) -> list[Completion]:
    """Run claims one after another in this thread and record them (``run_due``, ``--once``)."""
    to_run, to_skip = catch_up(claims, now=now())
    if to_skip:
        get_engine(db).skip(claims=to_skip, now=now())
    done = []
    for item in to_run:
        result = execute(item, now=now)
        done.extend(record([decide(item, result, now=now(), worker=worker)], db=db, now=now()))
    return done


def rescue(*, db: str, now: datetime, worker: str = "", limit: int = 100) -> int:
    """Record a ``lost`` attempt for every alarm whose lease expired, and deliver it again.

    Every worker runs this sweep; the fenced writes make it safe for two to run it at once.
    """
    from django_alarms.models import Worker

    rows = get_engine(db).rescue_candidates(now=now, limit=limit)
    if not rows:
        return 0
    names = dict(
        Worker.objects.using(db)
        .filter(pk__in={row["claimed_by"] for row in rows if row["claimed_by"]})
        .values_list("pk", "name")
    )
    completions = []
    for row, claim in zip(rows, claims_from(rows), strict=True):
        holder_name = names.get(claim.worker_id, str(claim.worker_id))
        result = lost(claim, row["claimed_at"] or row["lease_until"], now, holder_name)
        completions.append(decide(claim, result, now=now, worker=holder_name))
    applied = _record_lost(completions, db=db, now=now)
    for item in applied:
        logger.warning(
            "alarm %s attempt %d was lost (worker %s stopped renewing its lease); %s",
            item.claim.alarm_id,
            item.claim.number,
            item.worker,
            "delivering it again" if item.state == State.SCHEDULED else f"it is {item.state}",
            extra={"alarm_id": str(item.claim.alarm_id), "handler": item.claim.handler},
        )
    return len(applied)


def _record_lost(completions: Sequence[Completion], *, db: str, now: datetime) -> list[Completion]:
    """Record the rescued attempts in one transaction; when the database refuses it for
    another reason than an outage, one by one, so that a row it refuses (on MariaDB, one whose
    stored JSON is not JSON) does not stop the rescue of the others: that one is logged."""
    write = partial(
        record, db=db, now=now, fence={"lease_until__lt": now}, on_fenced=_rescued_already
    )
    try:
        return write(completions)
    except DatabaseError as exc:
        if outage(exc) or len(completions) == 1:
            raise
    applied = []
    for item in completions:
        try:
            applied += write([item])
        except DatabaseError as exc:
            if outage(exc):
                raise
            logger.error(
                "alarm %s attempt %d: its lost attempt cannot be recorded, the database refuses "
                "to update its row (%s); fix the row or cancel the alarm",
                item.claim.alarm_id,
                item.claim.number,
                exc,
                extra={"alarm_id": str(item.claim.alarm_id), "handler": item.claim.handler},
            )
    return applied


def _rescued_already(item: Completion) -> None:
    """A rescue sweep found the lease no longer expired, or the claim gone, when it came to
    write: another worker's sweep took it over first, or its holder renewed or recorded it."""
    logger.info(
        "alarm %s attempt %d: left as it is, it was no longer expired when this sweep came to "
        "write it (another worker's rescue sweep took it over first, or its holder renewed its "
        "lease or recorded it)",
        item.claim.alarm_id,
        item.claim.number,
        extra={"alarm_id": str(item.claim.alarm_id), "handler": item.claim.handler},
    )


__all__ = [
    "Completion",
    "Result",
    "catch_up",
    "context_for",
    "decide",
    "deliver",
    "execute",
    "record",
    "rescue",
    "timeout_for",
]
