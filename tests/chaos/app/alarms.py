"""The handler the battery schedules: it writes the ledger and can be made slow by its payload.

``{"sleep": 0.4}`` makes a call last that long, so that a fault hits attempts in flight. The
ledger's path is ``CHAOS_LEDGER`` (in the cluster processes of the django-q2 scenario too).
"""

from __future__ import annotations

import os
import time

from django_alarms import alarms
from tests.chaos import ledger

#: The handler's time limit: a claim's lease is this plus LEASE_GRACE.
TIMEOUT = 3.0


@alarms.handler(
    "chaos", max_attempts=100, timeout=TIMEOUT, backoff={"base": 0.1, "max": 0.5, "jitter": 0}
)
def chaos(alarm: alarms.AlarmContext) -> None:
    start = ledger.real_time()
    path = os.environ.get("CHAOS_LEDGER")
    common = f"{alarm.id} {alarm.attempt} {os.getpid()} {start!r}"
    if path:
        ledger.append(path, f"S {common} {alarm.due_at.timestamp()!r}\n")
    payload = alarm.payload or {}
    if payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    if path:
        ledger.append(path, f"E {common} {ledger.real_time()!r}\n")
