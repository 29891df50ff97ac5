"""The database's clock, estimated locally.

Claims, leases and heartbeats are compared with the database's time so that workers on machines
with skewed clocks agree on what is due; timers run on the local monotonic clock. This object
measures the offset between the local wall clock and the database's at every load, and turns
a due time into a monotonic deadline.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from django.db import connections

_QUERIES = {
    "postgresql": "SELECT clock_timestamp()",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
}


class DbClock:
    def __init__(self, db: str) -> None:
        self.db = db
        self.offset = 0.0  # database time minus local wall time, in seconds
        self.measured = False

    def sync(self) -> float:
        """Measure the offset (one query; SQLite runs in-process, so its clock is ours)."""
        connection = connections[self.db]
        query = _QUERIES.get(connection.vendor)
        if query is None:
            self.offset = 0.0
            self.measured = True
            return self.offset
        before = time.time()
        with connection.cursor() as cursor:
            cursor.execute(query)
            (value,) = cursor.fetchone()
        after = time.time()
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        # The database read its clock somewhere between our two readings: take the middle.
        self.offset = value.timestamp() - (before + after) / 2
        self.measured = True
        return self.offset

    def now(self) -> datetime:
        """The database's current time, estimated."""
        return datetime.fromtimestamp(time.time() + self.offset, timezone.utc)

    def deadline(self, due_at: datetime) -> float:
        """The ``time.monotonic()`` value at which the database's clock reaches ``due_at``."""
        wall = due_at.timestamp() - self.offset
        return time.monotonic() + (wall - time.time())

    def after(self, delta: timedelta) -> datetime:
        return self.now() + delta
