"""The checker: what a run's ledger, fault timeline and final database say about the promise.

It reads plain data (no Django), so that its unit tests feed it synthetic runs. Definitions
(``docs/reliability.md`` explains them for readers of the table):

- *lost*: an alarm that is not in an allowed final state (``succeeded``) at the end;
- *early*: a handler call that started before the due time of its own attempt (the time the
  worker handed it, which the attempt row records too) by more than :data:`EARLY_TOLERANCE`;
- *late*: start minus due time of the first (and only) call of *unfaulted* alarms: delivered
  by attempt 1, one call, not due during an outage;
- *duplicates*: handler calls beyond the one whose attempt was recorded ``ok``. Two calls of the
  same attempt are always unexplained. Another superseded call is *explained* when its worker
  (the one that called the handler, or the one that held the claim) was killed or frozen after
  the call started (or at most :data:`RECORD_LAG` after it ended, before its recorder wrote it),
  or when an outage (or an ambiguous commit in that worker) overlapped the call. Each kill,
  freeze or outage has a *bound*: the attempts its worker(s) could have had in flight (the
  concurrency) plus the calls that ended within :data:`RECORD_LAG` before it;
- *stuck*: ``running``, or ``scheduled`` and due more than a second before the end;
- *audit gaps*: a call without an ``Attempt`` row of its attempt, an ``ok`` row without a call,
  an ``ok`` row written for a call of another process, or two rows of one attempt.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.chaos.ledger import Call

EARLY_TOLERANCE = 0.005
RECORD_LAG = 1.0
#: A fault's time is taken just before its signal is sent: the worker may still start a call in
#: the moment until the signal lands (seen: a call started 8 us after the recorded kill).
SIGNAL_LAG = 0.05
#: A claim is made up to this long before its due time (CLAIM_AHEAD + CLAIM_GATHER, with room):
#: an alarm due later than this after an outage began cannot have been claimed before it.
CLAIMED_AHEAD = 0.2
#: Faults that take away a worker's attempts in flight.
DISRUPTIVE = ("kill", "stop")


@dataclass
class Attempt:
    alarm: str
    number: int
    outcome: str
    pid: int | None  # of the worker named in the row


@dataclass
class AlarmRow:
    id: str
    state: str
    due: float
    group: str = "stream"


@dataclass
class Report:
    alarms: int = 0
    calls: int = 0
    faults: int = 0
    lost: int = 0
    lost_ids: list[str] = field(default_factory=list)
    early: int = 0
    early_ids: list[str] = field(default_factory=list)
    late_p50_ms: float | None = None
    late_p99_ms: float | None = None
    late_max_ms: float | None = None
    unfaulted: int = 0
    herd_p99_ms: float | None = None
    herd_max_ms: float | None = None
    duplicates: int = 0
    explained: int = 0
    bound: int = 0
    beyond_bound: int = 0
    unexplained: int = 0
    unexplained_ids: list[str] = field(default_factory=list)
    same_attempt: int = 0
    stuck: int = 0
    stuck_ids: list[str] = field(default_factory=list)
    gaps_no_attempt: int = 0
    gaps_no_call: int = 0
    gaps_wrong_pid: int = 0
    gaps_double_record: int = 0
    gap_ids: list[str] = field(default_factory=list)
    stale: dict[str, int] = field(default_factory=dict)
    resume_s: list[float] = field(default_factory=list)
    died: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def gaps(self) -> int:
        return (
            self.gaps_no_attempt + self.gaps_no_call + self.gaps_wrong_pid + self.gaps_double_record
        )

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.stuck
            or self.unexplained
            or self.beyond_bound
            or self.early
            or self.gaps
            or self.died
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gaps"] = self.gaps
        data["ok"] = self.ok
        for key in ("lost_ids", "early_ids", "unexplained_ids", "stuck_ids", "gap_ids"):
            data[key] = data[key][:20]
        return data


def pid_of(worker: str) -> int | None:
    """The pid in a worker name (``host:pid:hex``, or a django-q2 process's ``host:pid``)."""
    match = re.search(r":(\d+)(?=:|\s|$)", worker or "")
    return int(match.group(1)) if match else None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def outages(faults: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(start, end)`` of every outage: the database down, or the workers' backends killed."""
    return [(f["start"], f["end"]) for f in faults if f["kind"] == "outage"]


def check(
    *,
    calls: Sequence[Call],
    faults: Sequence[dict[str, Any]],
    attempts: Sequence[Attempt],
    alarms: Sequence[AlarmRow],
    end: float,
    concurrency: int,
    workers: int,
    lease: float,
    allowed_states: Sequence[str] = ("succeeded",),
    stale: dict[str, int] | None = None,
) -> Report:
    report = Report(alarms=len(alarms), calls=len(calls), stale=dict(stale or {}))
    faults = [{**fault, "index": index} for index, fault in enumerate(faults)]
    report.faults = sum(1 for f in faults if f["kind"] not in ("start", "cont", "exit"))
    report.died = sum(1 for f in faults if f["kind"] == "exit")
    windows = outages(faults)
    by_alarm: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        by_alarm[call.alarm].append(call)
    rows: dict[tuple[str, int], list[Attempt]] = defaultdict(list)
    for row in attempts:
        rows[(row.alarm, row.number)].append(row)

    # Lost and stuck.
    for alarm in alarms:
        if alarm.state not in allowed_states:
            report.lost += 1
            report.lost_ids.append(alarm.id)
        if alarm.state == "running" or (alarm.state == "scheduled" and alarm.due < end - 1):
            report.stuck += 1
            report.stuck_ids.append(alarm.id)

    # Early.
    for call in calls:
        if call.start < call.due - EARLY_TOLERANCE:
            report.early += 1
            report.early_ids.append(f"{call.alarm}#{call.attempt}")

    # Audit gaps.
    called = {(call.alarm, call.attempt) for call in calls}
    pids_of_call = defaultdict(set)
    for call in calls:
        pids_of_call[(call.alarm, call.attempt)].add(call.pid)
    for key in called:
        if key not in rows:
            report.gaps_no_attempt += 1
            report.gap_ids.append(f"{key[0]}#{key[1]} called, no attempt row")
    for key, found in rows.items():
        if len(found) > 1:
            report.gaps_double_record += len(found) - 1
            report.gap_ids.append(f"{key[0]}#{key[1]} recorded {len(found)} times")
        for row in found:
            if row.outcome != "ok":
                continue
            if key not in called:
                report.gaps_no_call += 1
                report.gap_ids.append(f"{key[0]}#{key[1]} ok, no call")
            elif row.pid is not None and row.pid not in pids_of_call[key]:
                report.gaps_wrong_pid += 1
                report.gap_ids.append(f"{key[0]}#{key[1]} ok by {row.pid}, called elsewhere")

    # Duplicates, explained or not, and each fault's bound.
    disruptive = [f for f in faults if f["kind"] in DISRUPTIVE]
    ambiguous = [f for f in faults if f["kind"] == "ambiguous"]
    explained_by: dict[int, int] = defaultdict(int)
    for alarm_id, found in by_alarm.items():
        ok_numbers = {
            number
            for (alarm, number), group in rows.items()
            if alarm == alarm_id and any(row.outcome == "ok" for row in group)
        }
        per_attempt: dict[int, int] = defaultdict(int)
        for call in found:
            per_attempt[call.attempt] += 1
        for number, count in per_attempt.items():
            if count > 1:
                report.same_attempt += count - 1
                report.duplicates += count - 1
                report.unexplained += count - 1
                report.unexplained_ids.append(f"{alarm_id}#{number} called {count} times")
        superseded = [call for call in found if call.attempt not in ok_numbers]
        if not ok_numbers:
            superseded = superseded[:-1]  # not delivered (lost); the last call is no duplicate
        for call in superseded:
            report.duplicates += 1
            holders = {call.pid} | {
                row.pid for row in rows.get((alarm_id, call.attempt), []) if row.pid is not None
            }
            reason = _explain(call, holders, disruptive, windows, ambiguous, lease)
            if reason is None:
                report.unexplained += 1
                report.unexplained_ids.append(f"{alarm_id}#{call.attempt} pid {call.pid}")
            else:
                report.explained += 1
                explained_by[reason] += 1
    fault_bounds: dict[int, int] = {}
    for index, fault in enumerate(faults):
        if fault["kind"] in DISRUPTIVE:
            recent = sum(
                1
                for call in calls
                if call.pid == fault.get("pid")
                and call.end is not None
                and fault["t"] - RECORD_LAG <= call.end <= fault["t"]
            )
            fault_bounds[index] = concurrency + recent
        elif fault["kind"] == "outage":
            recent = sum(
                1
                for call in calls
                if call.end is not None and fault["start"] - RECORD_LAG <= call.end <= fault["end"]
            )
            fault_bounds[index] = workers * concurrency + recent
    report.bound = sum(fault_bounds.values())
    for index, count in explained_by.items():
        if index >= 0 and count > fault_bounds.get(index, 0):
            report.beyond_bound += count - fault_bounds.get(index, 0)
            report.notes.append(
                f"fault {faults[index]} explains {count} duplicates, bound "
                f"{fault_bounds.get(index, 0)}"
            )

    # Lateness of unfaulted alarms, and of the herd.
    okays = {key for key, group in rows.items() if any(row.outcome == "ok" for row in group)}
    late: list[float] = []
    herd: list[float] = []
    for alarm in alarms:
        found = by_alarm.get(alarm.id, [])
        if len(found) != 1 or found[0].attempt != 1 or (alarm.id, 1) not in okays:
            continue
        call = found[0]
        if any(a - 1 <= call.due <= b + 2 for a, b in windows):
            continue
        if alarm.group == "herd":
            herd.append(call.start - call.due)
        else:
            late.append(call.start - call.due)
    report.unfaulted = len(late)
    report.late_p50_ms = _ms(percentile(late, 50))
    report.late_p99_ms = _ms(percentile(late, 99))
    report.late_max_ms = _ms(max(late) if late else None)
    report.herd_p99_ms = _ms(percentile(herd, 99))
    report.herd_max_ms = _ms(max(herd) if herd else None)

    # Resume after each outage: the first call of an alarm that nobody can have claimed before
    # the outage began, counted from the moment the database answered again.
    for start, stop in windows:
        after = [c.start for c in calls if c.start >= stop and c.due > start + CLAIMED_AHEAD]
        if after:
            report.resume_s.append(round(min(after) - stop, 3))
    return report


def _explain(
    call: Call,
    holders: set[int],
    disruptive: Sequence[dict[str, Any]],
    windows: Sequence[tuple[float, float]],
    ambiguous: Sequence[dict[str, Any]],
    lease: float,
) -> int | None:
    """The index (in the fault timeline order of ``disruptive`` faults, as passed) of the fault
    that explains a superseded call, -1 for an outage or an ambiguous commit, None if none."""
    finished = call.end if call.end is not None else float("inf")
    for fault in disruptive:
        if fault.get("pid") not in holders:
            continue
        # The worker that called the handler died or froze with the call in flight, or before
        # it recorded it (a call it started after waking is never explained). Or the worker
        # that held the claim (django-q2: a cluster process ran it) was killed before its lease
        # ran out, with the task handed off.
        if fault.get("pid") == call.pid:
            if call.start - SIGNAL_LAG <= fault["t"] <= finished + RECORD_LAG:
                return int(fault["index"])
        elif call.start - lease <= fault["t"] <= finished + RECORD_LAG:
            return int(fault["index"])
    for start, stop in windows:
        if call.start - lease <= stop and finished + RECORD_LAG >= start:
            return -1
    for fault in ambiguous:
        if fault.get("pid") in holders and call.start - lease <= fault["t"] <= finished + lease:
            return -1
    return None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)
