"""The benchmark handlers, autodiscovered in the worker processes.

``bench_noop`` does nothing: the herd and the memory figures measure the worker, not a handler.
``bench_timing`` measures its own lateness: it appends one line per call to the file named by
``BENCH_TIMING_LOG``: ``alarm_id due_at_epoch started_epoch pid attempt``, with one ``write``
on a descriptor opened with ``O_APPEND`` (lines of concurrent threads and processes never
interleave; the descriptor is opened once per process, so it survives django-q's forks).
"""

from __future__ import annotations

import os
import time

from django_alarms import alarms

_fd: dict[int, int] = {}


def _write(line: str) -> None:
    path = os.environ.get("BENCH_TIMING_LOG")
    if not path:
        return
    pid = os.getpid()
    fd = _fd.get(pid)
    if fd is None:
        fd = _fd[pid] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())


@alarms.handler("bench_noop", max_attempts=3)
def bench_noop(alarm: alarms.AlarmContext) -> None:
    return None


@alarms.handler("bench_timing", max_attempts=3)
def bench_timing(alarm: alarms.AlarmContext) -> None:
    started = time.time()
    _write(
        f"{alarm.id} {alarm.due_at.timestamp():.6f} {started:.6f} {os.getpid()} {alarm.attempt}\n"
    )


def bare_timing(token: str, sent_at: float) -> None:
    """A bare django-q2 task (no django-alarms in the way): the same line as ``bench_timing``,
    with the time it was enqueued in place of a due time (the django_q scenario's baseline)."""
    started = time.time()
    _write(f"{token} {sent_at:.6f} {started:.6f} {os.getpid()} 1\n")
