"""The ingest queue's depth as one server process sees it, for the accept's backpressure check.

Counting the queue is a scan of its rows, and a server that fell behind -- when the check
matters -- has thousands: the accept of every batch paid for it. The depth is read again when
the last reading is older than ``max_age_s``; in between, the batches this process accepts are
added to it. Batches other processes accept or processors take show at the next reading: the
bound (``ingest_queue_max_records``) is a soft one, and a fraction of a second late is enough.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: How long a reading of the queue's depth serves.
MAX_AGE_S = 0.5


class QueueDepth:
    """Batches and records waiting, read through ``read`` at most every ``max_age_s``."""

    def __init__(
        self, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._batches = self._records = 0

    def get(self, read: Callable[[], tuple[int, int]]) -> tuple[int, int]:
        """(batches, records) waiting: the last reading plus what was accepted since, or a new
        reading through ``read`` when that one is too old."""
        now = self._clock()
        with self._lock:
            fresh = self._read_at is not None and now - self._read_at < self.max_age_s
            if fresh:
                return self._batches, self._records
        batches, records = read()
        with self._lock:
            self._read_at, self._batches, self._records = now, batches, records
        return batches, records

    def add(self, records: int) -> None:
        """This process queued a batch of ``records`` records."""
        with self._lock:
            self._batches += 1
            self._records += records
