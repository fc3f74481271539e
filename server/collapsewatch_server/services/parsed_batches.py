"""Batches this server process accepted, kept parsed until its processor takes them.

Accepting a batch validates its JSON; without this, processing it would validate the queued
copy of the same JSON once more (about a tenth of the server's CPU per point of a scalar-heavy
batch). A batch not found here -- accepted by another process, pushed out to keep the memory
bounded, or queued before a restart -- is parsed from the queue, as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from collapsewatch.schemas import IngestBatch

#: JSON bytes of the batches kept at most: their parsed form is up to ten times that (about
#: 700 B per scalar record of some 70 B), so some 40 MB. A batch another process takes is never
#: taken here; newer batches push it out. A backlog beyond this is parsed from the queue.
MAX_BYTES = 4 * 2**20


class ParsedBatches:
    """Batch id -> validated batch, oldest first, at most ``max_bytes`` of their JSON in all
    (the oldest batches make room). Shared by the threads that accept and the processor's."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._batches: OrderedDict[str, tuple[IngestBatch, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, batch: IngestBatch, size: int) -> None:
        """Keep ``batch``, parsed from ``size`` bytes of JSON, until :meth:`take` (a batch
        larger than the bound is not kept)."""
        if size > self.max_bytes:
            return
        with self._lock:
            key = str(batch.batch_id)
            if key in self._batches:
                return
            while self._batches and self._bytes + size > self.max_bytes:
                _, (_, pushed) = self._batches.popitem(last=False)
                self._bytes -= pushed
            self._batches[key] = (batch, size)
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
