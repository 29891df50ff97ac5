"""Probe handlers for the worker tests, run inside real ``run_alarms`` processes.

``probe`` appends one line per call to the file named by ``ALARMS_PROBE_LOG``:
``pid alarm_id attempt due_at_iso started_iso``. Its payload may ask it to sleep
(``{"sleep": 2}``), to wait until a file exists (``{"wait_for": path}``), to announce that it
started by creating a file (``{"started": path}``), or to fail (``{"fail": "message"}``).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from django_alarms import alarms


def _log(line: str) -> None:
    path = os.environ.get("ALARMS_PROBE_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


@alarms.handler("probe", max_attempts=3, backoff={"base": 0.2, "jitter": 0})
def probe(alarm: alarms.AlarmContext) -> None:
    started = datetime.now(timezone.utc)
    payload = alarm.payload or {}
    _log(
        f"{os.getpid()} {alarm.id} {alarm.attempt} {alarm.due_at.isoformat()} "
        f"{started.isoformat()}\n"
    )
    if payload.get("started"):
        with open(payload["started"], "w") as flag:
            flag.write(str(os.getpid()))
    if payload.get("wait_for"):
        deadline = time.monotonic() + float(payload.get("wait_max", 60))
        while not os.path.exists(payload["wait_for"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    if payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    if payload.get("fail"):
        raise RuntimeError(payload["fail"])
