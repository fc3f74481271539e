"""Batches this server process accepted, kept parsed until its processor takes them.

Accepting a batch validates its JSON; without this, processing it would validate the queued
copy of the same JSON once more (about a tenth of the server's CPU per record). A batch not
found here -- accepted by another process, left out to keep the memory bounded, or queued
before a restart -- is parsed from the queue, as before.

When the memory is full, the batch being accepted is the one left out: the processor takes
the oldest batches first, so under a backlog the kept ones are those it reaches next (pushing
the oldest out, as before, left it nothing but batches it would reach last, long after they
were pushed out in turn). A batch kept longer than ``max_age_s`` was taken by another process
(or its run was deleted): it makes room.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from collapsewatch.schemas import IngestBatch

#: JSON bytes of the batches kept at most: their parsed form is up to ten times that (about
#: 700 B per scalar record of some 70 B), so some 40 MB. A backlog beyond this is parsed from
#: the queue.
MAX_BYTES = 4 * 2**20
#: A batch kept this long was taken elsewhere: a backlog this deep is past the memory's bound
#: anyway, and the processor of this process does not find it here.
MAX_AGE_S = 120.0


class ParsedBatches:
    """Batch id -> validated batch, oldest first, at most ``max_bytes`` of their JSON in all.
    Shared by the threads that accept and the processor's."""

    def __init__(
        self,
        max_bytes: int = MAX_BYTES,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._batches: OrderedDict[str, tuple[IngestBatch, int, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, batch: IngestBatch, size: int) -> None:
        """Keep ``batch``, parsed from ``size`` bytes of JSON, until :meth:`take`; not when it
        does not fit (batches older than ``max_age_s`` make room first)."""
        if size > self.max_bytes:
            return
        now = self._clock()
        with self._lock:
            key = str(batch.batch_id)
            if key in self._batches:
                return
            while self._batches and self._bytes + size > self.max_bytes:
                _, (_, oldest, kept_at) = next(iter(self._batches.items()))
                if now - kept_at < self.max_age_s:
                    return  # full of batches the processor will reach first
                self._batches.popitem(last=False)
                self._bytes -= oldest
            self._batches[key] = (batch, size, now)
            self._bytes += size

    def take(self, batch_id: str) -> IngestBatch | None:
        """The batch kept for ``batch_id``, forgotten here; None when none is."""
        with self._lock:
            kept = self._batches.pop(batch_id, None)
            if kept is None:
                return None
            self._bytes -= kept[1]
            return kept[0]

    def __len__(self) -> int:
        return len(self._batches)
