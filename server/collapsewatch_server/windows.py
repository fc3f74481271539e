"""Windowed statistics at ingest: what a ``window=W`` indicator reads for a record.

A windowed indicator gets the sum of the statistics of its probe's last W records, the record
itself included: the records of the batch being ingested, and before them the stored ones,
loaded once per batch (``WindowStore.recent_stats``). Records arriving out of order (a spool
synced late) see the stored records before the batch's first step of that probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from collapsewatch.schemas import IngestBatch
from collapsewatch.schemas.stats import merge_kind
from collapsewatch_server.codec import Stats
from collapsewatch_server.indicators.registry import windows_needed
from collapsewatch_server.store.windows import WindowStore


def sum_stats(records: Sequence[Stats]) -> Stats:
    """The statistics of several records of one probe, merged (the last is the newest): each
    statistic as :func:`collapsewatch.schemas.stats.merge_kind` says, summed, maximised or the
    newest record's value. Windowed indicators must read only sums and maxima.

    Older records that lack one of the newest record's merged statistics, or hold it in another
    shape (a layer that changed width), are left out whole, so every sum covers the same records.
    """
    newest = records[-1]
    merged = [newest]
    for older in records[:-1]:
        if all(
            key in older and np.shape(older[key]) == np.shape(value)
            for key, value in newest.items()
            if merge_kind(key) != "last"
        ):
            merged.append(older)
    out: dict[str, float | np.ndarray] = dict(newest)
    for key, value in newest.items():
        kind = merge_kind(key)
        if kind == "last" or len(merged) == 1:
            continue
        total = np.asarray(value, dtype=np.float64).copy()
        merge = np.maximum if kind == "max" else np.add
        for older in merged[1:]:
            total = merge(total, np.asarray(older[key], dtype=np.float64))
        out[key] = float(total) if total.ndim == 0 else total
    return out


class BatchWindows:
    """For each record of a batch, the function that gives its windowed statistics."""

    def __init__(self, store: WindowStore, batch: IngestBatch, arrays: Sequence[Stats]) -> None:
        self._timelines: dict[str, list[tuple[int, Stats]]] = {}
        self._where: dict[int, tuple[str, int]] = {}  # record index -> (probe, position)
        self._cache: dict[tuple[int, int], Stats] = {}
        longest: dict[str, int] = {}
        first: dict[str, int] = {}
        for record in batch.records:
            w = windows_needed(record.kind)
            if w > 1:
                longest[record.probe] = max(w, longest.get(record.probe, 1))
                first[record.probe] = min(record.step, first.get(record.probe, record.step))
        if not longest:
            return  # the per-step path stays cheap: no query without a windowed indicator
        stored = store.recent_stats(batch.run.run_id, first, max(longest.values()) - 1)
        own: dict[str, list[tuple[int, int]]] = {}
        for i, record in enumerate(batch.records):
            if record.probe in longest:
                own.setdefault(record.probe, []).append((record.step, i))
        for probe, records in own.items():
            timeline = list(stored.get(probe, []))
            for step, i in sorted(records):
                self._where[i] = (probe, len(timeline))
                timeline.append((step, arrays[i]))
            self._timelines[probe] = timeline

    def of(self, index: int) -> Callable[[int], Stats] | None:
        """``window(w)`` for record ``index``, or None when no windowed indicator applies."""
        where = self._where.get(index)
        if where is None:
            return None
        probe, position = where

        def window(w: int) -> Stats:
            key = (index, w)
            if key not in self._cache:
                timeline = self._timelines[probe]
                records = [s for _, s in timeline[max(0, position - w + 1) : position + 1]]
                self._cache[key] = sum_stats(records)
            return self._cache[key]

        return window
