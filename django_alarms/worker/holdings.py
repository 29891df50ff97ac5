"""What one worker holds: its claims, from the claim until the attempt is recorded, and their
leases as last written.

Every thread of the worker reads or changes it: the main loop holds what it claimed, the
recorder forgets what it wrote, the heartbeat renews the leases and drops what another
worker's rescue took over, and the executor asks, right before an attempt starts, whether the
claim is still held (:meth:`Holdings.may_start`). One lock guards it all.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from django_alarms.claims import Claim

logger = logging.getLogger("django_alarms.worker")

#: A held claim starts only while its lease reaches this far past the database's clock (as
#: this worker estimates it): room for the estimate's error and the other workers'.
START_MARGIN = timedelta(milliseconds=500)


class Holdings:
    """The claims a worker holds, by alarm id, with their leases (by the database's clock)."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        #: Held by the methods below; take it to read :attr:`claims` over several steps.
        self.lock = threading.Lock()
        self.claims: dict[uuid.UUID, Claim] = {}
        self.leases: dict[uuid.UUID, datetime] = {}
        #: Held claims whose outcome the recorder is writing (or will write again after an
        #: outage): a renewal that finds them no longer running leaves them to the recorder.
        self.recording: set[uuid.UUID] = set()
        #: Claims dropped because their lease had passed or another worker took them over.
        self.dropped = 0

    def __len__(self) -> int:
        with self.lock:
            return len(self.claims)

    def __contains__(self, alarm_id: object) -> bool:
        with self.lock:
            return alarm_id in self.claims

    def ids(self) -> list[uuid.UUID]:
        with self.lock:
            return list(self.claims)

    def hold(self, claims: Iterable[Claim]) -> None:
        """Hold what was just claimed, with the lease the claim wrote."""
        with self.lock:
            for item in claims:
                self.claims[item.alarm_id] = item
                self.leases[item.alarm_id] = item.lease_until

    def forget(self, ids: Iterable[uuid.UUID]) -> None:
        """Stop holding these (recorded, released, or let go)."""
        with self.lock:
            for alarm_id in ids:
                self.claims.pop(alarm_id, None)
                self.leases.pop(alarm_id, None)
                self.recording.discard(alarm_id)

    def begin_recording(self, ids: Iterable[uuid.UUID]) -> None:
        """The recorder is about to write the outcomes of these claims."""
        with self.lock:
            self.recording.update(ids)

    def renewed(
        self, asked: Sequence[uuid.UUID], renewed: Mapping[uuid.UUID, int], lease: datetime
    ) -> list[Claim]:
        """Take in a renewal: of the claims ``asked`` for, those in ``renewed`` (alarm id ->
        attempt number, as :func:`claims.extend` returns them) are held until ``lease`` at
        least; the others, still held here, are dropped and returned (another worker's rescue
        took them over: they are never started)."""
        lost = []
        with self.lock:
            for alarm_id in asked:
                held = self.claims.get(alarm_id)
                if held is None:
                    continue  # recorded meanwhile
                if renewed.get(alarm_id) == held.number:
                    self.leases[alarm_id] = max(self.leases.get(alarm_id, lease), lease)
                elif alarm_id in self.recording:
                    # Not running any more because the recorder's write committed (its
                    # answer may have been lost): the recorder forgets it, not a takeover.
                    continue
                else:
                    lost.append(held)
                    del self.claims[alarm_id]
                    self.leases.pop(alarm_id, None)
            self.dropped += len(lost)
        if lost:
            logger.warning(
                "%d claim(s) are no longer held by this worker (their leases expired and another "
                "worker took them over): dropped; those not started yet will not start: %s",
                len(lost),
                ", ".join(f"{c.alarm_id} attempt {c.number}" for c in lost[:10]),
            )
        return lost

    def may_start(self, claim: Claim) -> bool:
        """Whether the attempt of ``claim`` may start now: this worker still holds the claim
        and its lease has not passed by the database's clock (less a margin for the clocks'
        error). A worker that froze, or lost its database, for longer than a lease finds its
        queued claims expired when it wakes; another worker may have delivered them meanwhile,
        so they are dropped, never started (their leases are left to the rescue sweep)."""
        now = self.now()
        # The common answer without the lock that the main thread takes for every claim:
        # each dict read is atomic, and a claim let go right after this check is no
        # different from one let go right after a check made under the lock.
        held = self.claims.get(claim.alarm_id)
        lease = self.leases.get(claim.alarm_id)
        if (
            held is not None
            and held.number == claim.number
            and lease is not None
            and lease - START_MARGIN > now
        ):
            return True
        with self.lock:
            held = self.claims.get(claim.alarm_id)
            lease = self.leases.get(claim.alarm_id)
            mine = held is not None and held.number == claim.number
            if mine and lease is not None and lease - START_MARGIN > now:
                return True
            if mine:
                self.claims.pop(claim.alarm_id, None)
                self.leases.pop(claim.alarm_id, None)
            self.dropped += 1
        logger.warning(
            "alarm %s attempt %d: not started, its lease expired before it could start (this "
            "worker froze or lost its database); the rescue sweep delivers it again",
            claim.alarm_id,
            claim.number,
            extra={"alarm_id": str(claim.alarm_id), "handler": claim.handler},
        )
        return False
