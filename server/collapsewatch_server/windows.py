"""Windowed statistics at ingest: what a ``window=W`` indicator reads for a record.

A windowed indicator gets the merged statistics of its probe's last W records, the record
itself included, but only of those within the last :func:`span` steps: a unit that stops
firing at step s counts as dead at most ``span(s)`` steps later however sparsely the run is
sampled, while a densely sampled run still sees W sampled batches (one batch alone
over-counts units that fire on rare inputs). The records are the batch's own and, before
them, the stored ones, which the ingest service loads once per batch (what to load:
:func:`stored_needed`). Records arriving out of order (a spool synced late) see the stored
records before the batch's first step of that probe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from collapsewatch.schemas import IngestBatch
from collapsewatch.schemas.stats import merge_kind
from collapsewatch_server.codec import Stats
from collapsewatch_server.indicators.catalogue import windows_needed

#: A window reaches this many steps back at least, ...
WINDOW_MIN_STEPS = 32
#: ... and this share of the steps so far on a longer run (the SDK's density floor samples
#: at least one step in 32 of the run so far, so this covers about four sampled steps).
WINDOW_FRACTION = 1 / 8


def span(step: int) -> int:
    """How far back, in steps, a window ending at ``step`` reaches."""
    return max(WINDOW_MIN_STEPS, int(step * WINDOW_FRACTION))


def sum_stats(records: Sequence[Stats]) -> Stats:
    """The statistics of several records of one probe, merged (the last is the newest): each
    statistic as :func:`collapsewatch.schemas.stats.merge_kind` says, summed, maximised or the
    newest record's value. Windowed indicators must read only sums and maxima.

    Older records that lack one of the newest record's merged statistics, or hold it in another
    shape (a layer that changed width), are left out whole, so every sum covers the same records.

    A statistic is merged when it is first read: an indicator reads two or three of a record's
    dozen (a layer's spectrum is not summed for its dead units).
    """
    newest = records[-1]
    merged = [newest]
    shapes = {k: _shape(v) for k, v in newest.items() if merge_kind(k) != "last"}
    for older in records[:-1]:
        if all(key in older and _shape(older[key]) == shape for key, shape in shapes.items()):
            merged.append(older)
    if len(merged) == 1:
        return dict(newest)
    return _Merged(newest, merged[1:])


def _shape(value: float | np.ndarray) -> tuple[int, ...]:
    # a number's shape is (): np.shape() on a float costs a microsecond, a window's check makes
    # a dozen calls per older record
    return value.shape if isinstance(value, np.ndarray) else ()


class _Merged(dict[str, float | np.ndarray]):
    """The newest record's statistics, each merged with the older records' when first read
    (``[]``, ``get``, ``values``, ``items``); ``in``, ``len`` and the keys are the newest's."""

    def __init__(self, newest: Stats, older: list[Stats]) -> None:
        super().__init__(newest)
        self._older: list[Stats] | None = older
        self._done: set[str] = set()

    def __getitem__(self, key: str) -> float | np.ndarray:
        value = super().__getitem__(key)
        if key in self._done or self._older is None:
            return value
        self._done.add(key)
        kind = merge_kind(key)
        if kind == "last":
            return value
        total = np.asarray(value, dtype=np.float64).copy()
        merge = np.maximum if kind == "max" else np.add
        for older in self._older:
            total = merge(total, np.asarray(older[key], dtype=np.float64))
        out = float(total) if total.ndim == 0 else total
        super().__setitem__(key, out)
        return out

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self else default  # noqa: SIM401 (merges on read)

    def _all(self) -> None:
        for key in list(super().keys()):
            self[key]
        self._older = None

    def values(self) -> Any:
        self._all()
        return super().values()

    def items(self) -> Any:
        self._all()
        return super().items()


def stored_needed(batch: IngestBatch) -> tuple[dict[str, int], int]:
    """What the batch's windowed indicators read of the stored records: for each probe with a
    windowed indicator, the step its stored records must precede (its first in the batch), and
    how many records at most (the longest window less the record itself). ``({}, 0)``: none,
    so the per-step path stays cheap (no query)."""
    longest: dict[str, int] = {}
    first: dict[str, int] = {}
    for record in batch.records:
        w = windows_needed(record.kind)
        if w > 1:
            longest[record.probe] = max(w, longest.get(record.probe, 1))
            first[record.probe] = min(record.step, first.get(record.probe, record.step))
    if not longest:
        return {}, 0
    return first, max(longest.values()) - 1


class BatchWindows:
    """For each record of a batch, the function that gives its windowed statistics.

    ``stored``: the probes' stored records, oldest first (as :func:`stored_needed` asks)."""

    def __init__(
        self,
        batch: IngestBatch,
        arrays: Sequence[Stats],
        stored: Mapping[str, Sequence[tuple[int, Stats]]],
    ) -> None:
        self._timelines: dict[str, list[tuple[int, Stats]]] = {}
        self._where: dict[int, tuple[str, int]] = {}  # record index -> (probe, position)
        self._cache: dict[tuple[int, int], Stats] = {}
        own: dict[str, list[tuple[int, int]]] = {}
        for i, record in enumerate(batch.records):
            if windows_needed(record.kind) > 1:
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
                step = timeline[position][0]
                recent = timeline[max(0, position - w + 1) : position + 1]
                records = [s for at, s in recent if at > step - span(step)]
                self._cache[key] = sum_stats(records)
            return self._cache[key]

        return window
