"""The append-only files a run leaves behind: the handler's ledger and the fault timeline.

Every line is written with one ``os.write`` on a descriptor opened with ``O_APPEND``, so
lines of concurrent writers never interleave and a line that was written survives ``kill -9``
of its writer (it is in the kernel's page cache the moment ``write`` returns). Nothing here
imports Django: the checker and its unit tests read these files without a database.

Ledger lines (space-separated):

- ``S <alarm id> <attempt> <pid> <start> <due>``: a handler call started (``start``: the
  machine's real wall clock, ``due``: the due time of this attempt as the worker handed it to
  the handler, both in seconds since the epoch);
- ``E <alarm id> <attempt> <pid> <start> <end>``: the same call returned.

Fault lines are JSON objects, one a line: ``{"t": <wall time>, "kind": ..., "pid": ...}``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The machine's real wall clock, taken before any seam can shift ``time.time`` (the
#: clock-skew scenario shifts a worker's clock, never the ledger's).
real_time = time.time


def append(path: str | os.PathLike[str], line: str) -> None:
    """Append one line with one ``write`` (atomic with respect to the other writers)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def fault(path: str | os.PathLike[str], kind: str, **fields: Any) -> dict[str, Any]:
    """Record a fault in the timeline; returns the entry."""
    entry = {"t": real_time(), "kind": kind, **fields}
    append(path, json.dumps(entry) + "\n")
    return entry


@dataclass
class Call:
    """One handler call, from its ``S`` line and (if it returned) its ``E`` line."""

    alarm: str
    attempt: int
    pid: int
    start: float
    due: float
    end: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_calls(path: str | os.PathLike[str]) -> list[Call]:
    """The calls of a ledger, in the order they started (a torn last line is ignored)."""
    started: dict[tuple[str, int, int, float], Call] = {}
    calls: list[Call] = []
    for line in _lines(path):
        parts = line.split()
        if len(parts) != 6 or parts[0] not in ("S", "E"):
            continue
        kind, alarm, attempt, pid, start, last = parts
        key = (alarm, int(attempt), int(pid), float(start))
        if kind == "S":
            call = Call(alarm, int(attempt), int(pid), float(start), float(last))
            started[key] = call
            calls.append(call)
        elif key in started:
            started[key].end = float(last)
    calls.sort(key=lambda call: call.start)
    return calls


def read_faults(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    faults = []
    for line in _lines(path):
        try:
            faults.append(json.loads(line))
        except ValueError:
            continue
    faults.sort(key=lambda entry: entry["t"])
    return faults


def _lines(path: str | os.PathLike[str]) -> Iterator[str]:
    if not Path(path).exists():
        return iter(())
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines: Iterable[str] = handle.read().splitlines()
    return iter([line for line in lines if line.strip()])
