"""The example app's handlers: autodiscovered because the module is called ``alarms.py``."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from django_alarms import alarms

logger = logging.getLogger("django_alarms.example")


@alarms.handler("send_reminder", max_attempts=5, timeout=30)
def send_reminder(alarm: alarms.AlarmContext) -> None:
    """Pretend to e-mail account ``payload["account"]`` a reminder."""
    late_ms = (timezone.now() - alarm.due_at).total_seconds() * 1000
    logger.info(
        "reminder for account %s (attempt %d/%d, %.1f ms after its due time)",
        alarm.payload["account"],
        alarm.attempt,
        alarm.max_attempts,
        late_ms,
    )


@alarms.handler("flaky_partner_call", max_attempts=3, backoff={"base": 1, "jitter": 0})
def flaky_partner_call(alarm: alarms.AlarmContext) -> alarms.Retry | None:
    """Fails on its first attempt, as a partner API sometimes does, then succeeds."""
    if alarm.attempt == 1:
        raise ConnectionError("partner API timed out (the demo's deliberate first failure)")
    logger.info("partner call succeeded on attempt %d", alarm.attempt)
    return None


@alarms.handler("poll_export")
def poll_export(alarm: alarms.AlarmContext) -> alarms.Retry | None:
    """Asks to be delivered again until its third attempt, like polling a slow export."""
    if alarm.attempt < 3:
        return alarms.Retry(delay=timedelta(seconds=1), reason="export not ready yet")
    logger.info("export ready after %d polls", alarm.attempt)
    return None


@alarms.handler("heartbeat_report")
def heartbeat_report(alarm: alarms.AlarmContext) -> None:
    """A recurring handler: logs the occurrence it was delivered for."""
    logger.info("recurring report for the occurrence at %s", alarm.due_at.isoformat())
