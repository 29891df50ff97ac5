"""The log line of an attempt, written by the worker's recorder and by the django-q2 task.

One line per attempt: alarm id, handler, attempt number and budget, outcome, duration,
lateness and the state the alarm went to. A failed alarm is an ``ERROR``, an attempt that did
not succeed a ``WARNING``, a success ``INFO``; when one batch holds many successes they are
summed up in one ``INFO`` line (and logged one by one at ``DEBUG``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from django_alarms.outcomes import Completion, CompletionSignal
from django_alarms.types import Outcome, State

#: When one recorder batch holds more successes than this, they are logged as one INFO line
#: (and one DEBUG line each): a worker draining thousands a second writes a readable log.
LOG_SUCCESSES_EACH_UP_TO = 10


def level_of(item: Completion) -> int:
    """The level of an attempt's line."""
    if item.state == State.FAILED or item.signal is CompletionSignal.FAILED:
        return logging.ERROR
    if item.result.outcome != Outcome.OK:
        return logging.WARNING
    return logging.INFO


def log_attempts(
    items: Sequence[Completion], logger: logging.Logger, *, since: datetime | None = None
) -> None:
    """One line per attempt; successes in a large batch are summed up in one line. ``since``:
    when the worker started (an attempt due before it says so: its lateness is the wait for a
    worker, not the worker's)."""
    levels = [level_of(item) for item in items]
    successes = [item for item, level in zip(items, levels, strict=True) if level == logging.INFO]
    summarise = len(successes) > LOG_SUCCESSES_EACH_UP_TO
    for item, level in zip(items, levels, strict=True):
        log_attempt(
            item,
            logging.DEBUG if summarise and level == logging.INFO else level,
            logger,
            since=since,
        )
    if summarise and logger.isEnabledFor(logging.INFO):
        late = sorted(
            (item.result.started_at - item.claim.intended_at).total_seconds() * 1000
            for item in successes
        )
        handlers = Counter(item.claim.handler for item in successes)
        logger.info(
            "%d attempts succeeded (%s); lateness p50 %.1f ms, max %.1f ms",
            len(successes),
            ", ".join(f"{name} x{count}" for name, count in handlers.most_common()),
            late[len(late) // 2],
            late[-1],
            extra={"succeeded": len(successes)},
        )


def log_attempt(
    item: Completion, level: int, logger: logging.Logger, *, since: datetime | None = None
) -> None:
    """The line of one attempt."""
    if not logger.isEnabledFor(level):
        return
    claim, result = item.claim, item.result
    late = (result.started_at - claim.intended_at).total_seconds() * 1000
    logger.log(
        level,
        "alarm %s %s attempt %d/%d: %s in %.1f ms (%.1f ms late%s)%s -> %s",
        claim.alarm_id,
        claim.handler,
        claim.budget_attempt,
        claim.max_attempts,
        result.outcome,
        (result.finished_at - result.started_at).total_seconds() * 1000,
        late,
        ": due before this worker started" if since and claim.intended_at < since else "",
        f": {result.error}" if result.error else "",
        item.state if item.due_at is None else f"{item.state} at {item.due_at.isoformat()}",
        extra={
            "alarm_id": str(claim.alarm_id),
            "handler": claim.handler,
            "attempt": claim.number,
            "outcome": str(result.outcome),
            "lateness_ms": round(late, 3),
            "worker": item.worker or None,
            "state": str(item.state),
        },
        # The exception itself, for error trackers; the line says what it was already.
        exc_info=result.exception if level >= logging.WARNING else None,
    )
