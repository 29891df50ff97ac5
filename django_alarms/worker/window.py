"""The window: what a worker has armed of the alarms due soon, and how it keeps it current.

A worker arms the scheduled alarms due within two load intervals (overdue ones too), at most
``MAX_IN_MEMORY`` of them with what it holds; between loads it follows the change feed, and it
arms again the retries and next occurrences its own recorder wrote that fall inside the
window. The main loop calls :meth:`Window.load`, :meth:`Window.poll` and
:meth:`Window.take_rearms`; the recorder thread calls :meth:`Window.rearm_written`.

A window that ``MAX_IN_MEMORY`` caps ends at its last row, and its next loads (every second
while capped) go on from that row's ``(due_at, id)`` instead of reading again the rows armed
already; what changes behind that key is the change feed's to find. Once per
``LOAD_INTERVAL`` a load starts from the beginning all the same, as the one read that needs
no feed to be complete.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django_alarms.engines import WindowKey
from django_alarms.types import State
from django_alarms.worker.clock import DbClock
from django_alarms.worker.holdings import Holdings
from django_alarms.worker.loader import Loader
from django_alarms.worker.timers import Armed, Timers

logger = logging.getLogger("django_alarms.worker")

#: Changes are looked for this far back from the last poll, for transactions that committed
#: after that poll although they wrote their rows before it.
FEED_OVERLAP = timedelta(seconds=5)


class Window:
    """The alarms a worker has armed (in ``timers``) and the bounds of what it has read."""

    def __init__(
        self,
        *,
        loader: Loader,
        clock: DbClock,
        timers: Timers,
        holdings: Holdings,
        load_interval: timedelta,
        max_in_memory: int,
        once: bool,
    ) -> None:
        self.loader = loader
        self.clock = clock
        self.timers = timers
        self.holdings = holdings
        self.load_interval = load_interval
        self.max_in_memory = max_in_memory
        self.once = once
        #: Alarms due before this are armed (None before the first load).
        self.end: datetime | None = None
        #: The last load found more than MAX_IN_MEMORY allowed: load again soon.
        self.capped = False
        #: Where a capped window's next load goes on from (None: from the beginning).
        self.after: WindowKey | None = None
        #: When the last load from the beginning was made (the database's clock).
        self.last_full: datetime | None = None
        self.last_poll: datetime | None = None
        self.loads = 0
        #: Retries and next occurrences written by the recorder, to arm from the main thread.
        self.rearms: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def load(self) -> None:
        """Arm the alarms due before now + 2 x LOAD_INTERVAL (overdue ones too)."""
        self.clock.sync()
        now = self.clock.now()
        # --once delivers what is due now; a running worker arms two intervals ahead.
        until = now if self.once else now + 2 * self.load_interval
        room = max(self.max_in_memory - self.occupied(), 0)
        full = (
            self.after is None
            or self.last_full is None
            or now - self.last_full >= self.load_interval
        )
        after = None if full else self.after
        rows = self.loader.window(until, room, after) if room else []
        self.capped = room == 0 or len(rows) >= room
        if self.capped and rows:
            # The window ends at the last alarm loaded: later ones wait for room.
            last = rows[-1]
            self.end = last["due_at"]
            self.after = (last["due_at"], last["id"])
        elif self.capped:
            # No room at all: arm nothing beyond what is armed, go on from the same key.
            if full:
                self.end, self.after = now, None
        else:
            self.end, self.after = until, None
        armed = self.arm(rows)
        if full:
            # A load from the beginning saw every change made so far; one that goes on from
            # a key did not see those behind it, which the next poll finds.
            self.last_poll = self.last_full = now
        self.loads += 1
        self.timers.compact()
        if self.end is not None and (armed or logger.isEnabledFor(logging.DEBUG)):
            logger.log(
                logging.INFO if armed else logging.DEBUG,
                "loaded %d alarm(s) due before %s (%d newly armed, %d armed in all%s)",
                len(rows),
                self.end.isoformat(timespec="seconds"),
                armed,
                len(self.timers),
                ", window capped by MAX_IN_MEMORY" if self.capped else "",
            )

    def poll(self) -> None:
        """Arm alarms scheduled or moved since the last look (the change feed)."""
        if self.end is None or self.last_poll is None:
            return
        room = max(self.max_in_memory - self.occupied(), 0)
        if not room:
            return  # nowhere to arm them: the changes are looked for once there is room
        now = self.clock.now()
        since = self.last_poll - FEED_OVERLAP
        rows = self.loader.changes(since, self.horizon(self.end), room)
        self.last_poll = now
        armed = self.arm(rows)
        if armed:
            logger.debug("change feed armed %d alarm(s)", armed)

    def horizon(self, end: datetime) -> datetime:
        """How far ahead the change feed looks: to the window's end, but no further than a
        load from the beginning will read in time. Such a load comes once per LOAD_INTERVAL
        and arms what is due within two more, so a change due later than one interval and a
        half after the last one is left to it (half an interval to spare for a busy main
        loop). Without this bound, a worker delivering recurring alarms read every one of its
        own next occurrences again at each poll of the feed's overlap."""
        if self.once or self.last_full is None:
            return end
        return min(end, self.last_full + self.load_interval * 1.5)

    def occupied(self) -> int:
        return len(self.timers) + len(self.holdings)

    def arm(self, rows: Sequence[dict[str, Any]]) -> int:
        """Arm rows of :data:`engines.ARM_FIELDS`, except those this worker holds or has armed
        at that time already; returns how many were armed."""
        armed = 0
        shift = self.clock.shift()
        with self.holdings.lock:
            held = self.holdings.claims
            armed_now = self.timers.get
            for row in rows:
                if row["id"] in held:
                    continue  # claimed by this worker already
                current = armed_now(row["id"])
                if current is not None and current.due_at == row["due_at"]:
                    continue  # armed already, at that time (a feed overlap reads it again)
                item = Armed(
                    alarm_id=row["id"],
                    due_at=row["due_at"],
                    deadline=row["due_at"].timestamp() + shift,
                    handler=row["handler"],
                    timeout=row["timeout"],
                )
                armed += self.timers.arm(item)
        return armed

    def take_rearms(self) -> None:
        """Arm the retries and next occurrences that this worker's own attempts produced."""
        rows = []
        while True:
            try:
                rows.append(self.rearms.get_nowait())
            except queue.Empty:
                break
        if rows:
            self.arm(rows)

    def rearm_written(self, applied: Sequence[Any]) -> None:
        """The recorder wrote these completions: those scheduled again inside the window
        (retries, next occurrences) are armed again by the main thread."""
        end = self.end
        if end is None:
            return
        for item in applied:
            if item.state == State.SCHEDULED and item.due_at is not None and item.due_at < end:
                self.rearms.put(
                    {
                        "id": item.claim.alarm_id,
                        "due_at": item.due_at,
                        "handler": item.claim.handler,
                        "timeout": item.claim.timeout,
                    }
                )
