"""Deliver one claimed attempt and write what follows: the one path every executor ends in.

Three steps, kept apart so that executors can run them in different places:

1. :func:`execute` builds the :class:`AlarmContext`, calls the handler and returns a
   :class:`~django_alarms.outcomes.Result` (it never raises for a handler's fault and never
   touches the database);
2. :func:`~django_alarms.outcomes.decide` turns the claim and the result into a
   :class:`~django_alarms.outcomes.Completion`, the alarm's next state (done, retry with
   backoff, next occurrence, failed), without side effects (``outcomes.py``);
3. :func:`record` writes completions in one short transaction: the :class:`Attempt` rows and the
   fenced updates of the alarms, then sends the signals.

``run_due`` (testing), the worker's inline executor and the django-q executor all call these;
:func:`rescue` records the attempts of workers that died as lost.
"""

from __future__ import annotations

import inspect
import logging
import traceback as tb
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from django.db import DatabaseError, transaction

from django_alarms import clock, tracing
from django_alarms.claims import Claim, claims_from
from django_alarms.conf import alarm_settings
from django_alarms.engines import get_engine
from django_alarms.exceptions import InvalidAlarm, invalid
from django_alarms.handlers import HandlerSpec
from django_alarms.models import Alarm
from django_alarms.outcomes import (
    Completion,
    CompletionSignal,
    Result,
    aware,
    catch_up,
    decide,
    lost,
    spec_for,
)
from django_alarms.signals import (
    alarm_failed,
    alarm_retrying,
    alarm_started,
    alarm_succeeded,
    listened,
)
from django_alarms.supervision import outage
from django_alarms.types import AlarmContext, Fail, Outcome, Retry, State
from django_alarms.validation import (
    ERROR_MAX_LENGTH,
    TRACEBACK_MAX_LENGTH,
    payload_json,
    storable,
    storable_after,
    storable_text,
)

logger = logging.getLogger(__name__)


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
    ``started``: when the attempt started, if the caller already read the clock for it. With
    tracing on, the attempt runs in its span (:mod:`django_alarms.tracing`)."""
    if started is None:
        started = now()
    if tracing.on():
        begun = started
        return tracing.deliver(claim, started, lambda: _execute(claim, now, begun))
    return _execute(claim, now, started)


def _execute(claim: Claim, now: Callable[[], datetime], started: datetime) -> Result:
    spec = spec_for(claim)
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
            Outcome.ERROR,
            started,
            now(),
            _error_text(cause),
            tb.format_exc(),
            final=True,
            exception=cause,
        )
    except (Exception, SystemExit) as exc:
        if type(exc) is not SystemExit and not isinstance(exc, Exception):
            raise  # a SystemExit of the executor's own (django-q2's time limit)
        return Result(
            Outcome.ERROR, started, now(), _error_text(exc), tb.format_exc(), exception=exc
        )
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
            storable("Retry(at=)", aware(answer.at))
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
