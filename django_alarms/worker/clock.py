"""The database's clock, estimated locally.

Claims, leases and heartbeats are compared with the database's time so that workers on machines
with skewed clocks agree on what is due; timers run on the local monotonic clock. This object
measures the offset between the local wall clock and the database's at every load, and turns
a due time into a monotonic deadline.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from django_alarms.engines import get_engine


class DbClock:
    def __init__(self, db: str) -> None:
        self.db = db
        self.offset = 0.0  # database time minus local wall time, in seconds
        self.measured = False

    def sync(self, samples: int | None = None) -> float:
        """Measure the offset (SQLite runs in-process, so its clock is ours).

        Each sample reads the database's clock between two local readings; the database read
        it somewhere in between, so the sample with the shortest round trip bounds the error
        best (to half of that round trip, typically a fraction of a millisecond), like NTP.
        """
        engine = get_engine(self.db)
        query = engine.clock_query
        if query is None:
            self.offset = 0.0
            self.measured = True
            return self.offset
        if samples is None:
            # Five readings at start; then two per load (the main thread makes them, and with a
            # distant database each is a round trip that nothing else happens during).
            samples = 2 if self.measured else 5
        connection = engine.connection
        connection.ensure_connection()  # a connection's set-up is not a round trip
        measured: list[tuple[float, float]] = []  # (round trip, offset)
        with connection.cursor() as cursor:
            for _ in range(max(samples, 1)):
                before = time.time()
                cursor.execute(query)
                (value,) = cursor.fetchone()
                after = time.time()
                if isinstance(value, str):
                    value = datetime.fromisoformat(value)
                if value.tzinfo is None:
                    value = value.replace(tzinfo=timezone.utc)
                measured.append((after - before, value.timestamp() - (before + after) / 2))
        self.offset = min(measured)[1]
        self.measured = True
        return self.offset

    def now(self) -> datetime:
        """The database's current time, estimated."""
        return datetime.fromtimestamp(time.time() + self.offset, timezone.utc)

    def shift(self) -> float:
        """What turns a due time into the ``time.monotonic()`` value at which the database's
        clock reaches it: ``due_at.timestamp() + shift``. Taken once for many alarms, it is
        cheaper than two clock readings for each, and alarms due at the same time get the
        very same deadline (so they are fired, and claimed, in the order they were armed, not
        in the order of the clocks' jitter)."""
        return time.monotonic() - time.time() - self.offset
