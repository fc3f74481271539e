"""Where every record handed to the sender is now: the delivery guarantee, as counters.

A record is pending (in memory, queued or in a batch being sent) until it is stored by the
server, spooled on disk, set aside as rejected, or dropped with a reason. A spooled record
moves on to stored or rejected when a replay settles its batch. At every moment

    accepted = pending + stored + spooled + rejected + dropped

and after ``close`` nothing is pending. Both the training thread and the sender thread move
records, so every change happens under one lock.
"""

from __future__ import annotations

import enum
import threading
from collections import Counter


class Fate(enum.StrEnum):
    """Where a batch's records are."""

    PENDING = "pending"
    STORED = "stored"
    SPOOLED = "spooled"
    REJECTED = "rejected"
    DROPPED = "dropped"


class Ledger:
    """Counts records by fate, and batches by id so their records can move together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: Counter[Fate] = Counter()
        self._accepted = 0
        self._batches: dict[str, tuple[int, Fate]] = {}
        self.drop_reasons: Counter[str] = Counter()
        self.batches_sent = self.batches_spooled = self.failures = 0

    def accept(self, count: int) -> None:
        """``count`` new records, pending."""
        with self._lock:
            self._accepted += count
            self._records[Fate.PENDING] += count

    def drop(self, count: int, reason: str) -> None:
        """Pending records that will never be sent, for ``reason``."""
        with self._lock:
            self._move(count, Fate.PENDING, Fate.DROPPED)
            self.drop_reasons[reason] += count

    def batch(self, batch_id: str, count: int) -> None:
        """``count`` pending records now travel as batch ``batch_id``."""
        with self._lock:
            self._batches[batch_id] = (count, Fate.PENDING)

    def settle(self, batch_id: str, fate: Fate, reason: str = "") -> None:
        """Batch ``batch_id`` was stored, spooled, set aside or dropped (``reason``).

        A batch this ledger does not know (a spool file of an earlier process) moves nothing.
        """
        with self._lock:
            count, before = self._batches.pop(batch_id, (0, None))
            if before is None:
                return
            if fate is Fate.STORED:
                self.batches_sent += 1
            elif fate is Fate.SPOOLED and before is Fate.PENDING:
                self.batches_spooled += 1
            elif fate is Fate.DROPPED:
                self.drop_reasons[reason] += count
            self._move(count, before, fate)
            if fate is Fate.SPOOLED:  # not final: a replay settles it again
                self._batches[batch_id] = (count, fate)

    def failure(self) -> None:
        """One request that did not get the batch stored."""
        with self._lock:
            self.failures += 1

    def after_fork(self, parent_pending: str) -> None:
        """In a forked child: a fresh lock (the parent's may have been held), and the records
        the parent was sending are the parent's, dropped here for ``parent_pending``."""
        self._lock = threading.Lock()
        self.drop(self._records[Fate.PENDING], parent_pending)

    def counts(self) -> dict[str, int]:
        """A consistent snapshot: records by fate, records accepted, and batch counters."""
        with self._lock:
            out = {fate.value: self._records[fate] for fate in Fate}
            out["accepted"] = self._accepted
            out["batches_sent"] = self.batches_sent
            out["batches_spooled"] = self.batches_spooled
            out["failures"] = self.failures
            return out

    def _move(self, count: int, source: Fate, target: Fate) -> None:
        self._records[source] -= count
        self._records[target] += count
