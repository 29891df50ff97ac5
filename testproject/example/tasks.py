"""The example app's Django tasks (``@task``), run by django-alarms' Tasks backend.

Django 6 has ``django.tasks``; Django 5.2 has it with the django-tasks backport
(``pip install "django-alarms[tasks]"``). The settings configure the backend only when one of
them is installed, and workers import this module at start-up because it is called
``tasks.py``.
"""

from __future__ import annotations

import logging

from django.utils import timezone

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task

logger = logging.getLogger("django_alarms.example")


@task(max_attempts=3)
def send_digest(account: int, enqueued_at: str) -> dict[str, object]:
    """Pretend to build and send account ``account`` its digest; return what was sent."""
    logger.info("digest task for account %s (enqueued at %s)", account, enqueued_at)
    return {"account": account, "sent_at": timezone.now().isoformat()}
