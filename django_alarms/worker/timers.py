"""Armed alarms: a heap of monotonic deadlines and a map by id, so an id is never armed twice."""

from __future__ import annotations

import heapq
import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class Armed:
    alarm_id: uuid.UUID
    due_at: datetime
    deadline: float  # time.monotonic() at which it is due
    handler: str
    timeout: float | None


class Timers:
    """Alarms waiting for their time. Re-arming an id updates it; stale heap entries are
    skipped when they surface (lazy deletion keeps every operation O(log n))."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, uuid.UUID]] = []
        self._armed: dict[uuid.UUID, Armed] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._armed)

    def __contains__(self, alarm_id: object) -> bool:
        return alarm_id in self._armed

    def get(self, alarm_id: uuid.UUID) -> Armed | None:
        return self._armed.get(alarm_id)

    def arm(self, item: Armed) -> bool:
        """Arm or update; returns False when it was already armed at that very deadline."""
        current = self._armed.get(item.alarm_id)
        if current is not None and current.due_at == item.due_at:
            return False
        self._armed[item.alarm_id] = item
        heapq.heappush(self._heap, (item.deadline, next(self._seq), item.alarm_id))
        return True

    def disarm(self, alarm_id: uuid.UUID) -> None:
        self._armed.pop(alarm_id, None)

    def _settle(self) -> None:
        heap, armed = self._heap, self._armed
        while heap:
            deadline, _, alarm_id = heap[0]
            item = armed.get(alarm_id)
            if item is not None and item.deadline == deadline:
                return
            heapq.heappop(heap)

    def next_deadline(self) -> float | None:
        self._settle()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until: float, limit: int) -> list[Armed]:
        """Remove and return up to ``limit`` armed alarms due by ``until``, earliest first."""
        out: list[Armed] = []
        heap, armed = self._heap, self._armed
        while heap and len(out) < limit:
            deadline, _, alarm_id = heap[0]
            item = armed.get(alarm_id)
            if item is None or item.deadline != deadline:
                heapq.heappop(heap)
                continue
            if deadline > until:
                break
            heapq.heappop(heap)
            del armed[alarm_id]
            out.append(item)
        return out

    def compact(self) -> None:
        """Drop stale heap entries when they outnumber the live ones (bounded memory)."""
        if len(self._heap) > 2 * len(self._armed) + 1024:
            self._heap = [
                (item.deadline, next(self._seq), item.alarm_id) for item in self._armed.values()
            ]
            heapq.heapify(self._heap)
