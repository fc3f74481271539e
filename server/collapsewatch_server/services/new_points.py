"""The points a processed batch adds: worked out from reads (:func:`plan`), then written in
the batch's transaction (:func:`write`).

Planning reads what is stored of the batch's series (their counters, and the steps they
already have where the batch reaches back into them) and builds every row: the points their
series lack (the first of repeats in the batch), the counters' increments and the rollup bins.
It needs no write lock: only the processor holding the run's oldest batch writes the run's
series (one batch of a run at a time), so what it read still holds when it writes; if its claim
expired meanwhile, the transaction's first write finds out and everything is rolled back. The
write transaction -- on SQLite the one writer of the database, which ingest answers wait for --
then only runs the prepared statements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from collapsewatch_server import codec, rollups
from collapsewatch_server.repositories import point_rollups, points
from collapsewatch_server.rollups import Bins


@dataclass(frozen=True)
class Planned:
    """What :func:`write` stores; ``new``: which of the batch's points are stored."""

    new: np.ndarray
    rows: list[tuple[int, int, float | None]]
    #: one row per series holding a block of its packed points (``points.add_blocks``)
    blocks: list[points.Block]
    counts: list[tuple[int, int, int, int, float | None]]
    levels: list[tuple[int, Bins]]
    roll: list[int]


def plan(
    s: Session,
    stored: Mapping[int, points.Counters],
    sids: np.ndarray,
    steps: np.ndarray,
    vals: np.ndarray,
    packed: np.ndarray | None = None,
) -> Planned:
    """The rows for the points ``(sids, steps, vals)`` whose series (``stored``: what is stored
    of each) have no point at that step yet, the first of repeats in the batch; their
    counters' increments and rollup bins. ``s`` reads the steps a series has where the batch
    reaches back into it. ``packed``: which points (a scalar column's) are stored as one
    block per series, not one row each."""
    new = np.ones(sids.size, dtype=bool)
    if not sids.size:
        return Planned(new, [], [], [], [], [])
    order = np.lexsort((steps, sids))  # stable: of repeats in the batch the first comes first
    sorted_sids, sorted_steps = sids[order], steps[order]
    repeat = (np.diff(sorted_sids) == 0) & (np.diff(sorted_steps) == 0)
    new[order[1:][repeat]] = False
    # A series only grows at its end, except when a batch is synced late: stored steps are
    # looked up only for series the batch reaches at or behind their last step.
    starts = np.flatnonzero(np.diff(sorted_sids, prepend=-1))
    for sid, first in zip(sorted_sids[starts].tolist(), sorted_steps[starts].tolist(), strict=True):
        last = stored[sid].last_step
        if last is not None and first <= last:
            known = points.known_steps(s, sid, first, last)
            new &= ~((sids == sid) & np.isin(steps, np.fromiter(known, np.int64, len(known))))
    sids, steps, vals = sids[new], steps[new], vals[new]
    blocked = np.zeros(sids.size, dtype=bool) if packed is None else packed[new]
    alone = ~blocked
    rows = _rows(sids[alone], steps[alone], vals[alone])
    blocks = _blocks(sids[blocked], steps[blocked], vals[blocked])
    bins = rollups.of_points(sids, steps, vals)
    whole = rollups.merge(bins, width=2**62)  # one bin per series: what the batch adds to it
    counts = [
        (sid, n, first, last, value if np.isfinite(value) else None)
        for sid, n, first, last, value in zip(
            whole.series.tolist(),
            whole.count.tolist(),
            whole.first_step.tolist(),
            whole.last_step.tolist(),
            whole.last.tolist(),
            strict=True,
        )
    ]
    # The finest rollup level takes every new point; the coarser ones only those behind their
    # series' mark, and catch up every ROLL_STEPS steps (see ``rollups``).
    series = whole.series.tolist()
    marks = np.fromiter((stored[sid].coarse_until for sid in series), np.int64, len(series))
    levels = rollups.levels_at_ingest(bins, np.repeat(marks, whole.count))
    before = np.fromiter(
        (-1 if stored[sid].last_step is None else stored[sid].last_step for sid in series),
        np.int64,
        len(series),
    )
    due = rollups.roll_due(marks, np.maximum(before, whole.last_step))
    return Planned(new, rows, blocks, counts, levels, whole.series[due].tolist())


def _rows(
    sids: np.ndarray, steps: np.ndarray, vals: np.ndarray
) -> list[tuple[int, int, float | None]]:
    """One row per point: (series id, step, value or None when not finite)."""
    finite = np.isfinite(vals)
    return [
        (sid, st, v if ok else None)
        for sid, st, v, ok in zip(
            sids.tolist(), steps.tolist(), vals.tolist(), finite.tolist(), strict=True
        )
    ]


def _blocks(sids: np.ndarray, steps: np.ndarray, vals: np.ndarray) -> list[points.Block]:
    """One block per series of these points, in step order."""
    if not sids.size:
        return []
    order = np.lexsort((steps, sids))
    sids, steps, vals = sids[order], steps[order], vals[order]
    starts = np.flatnonzero(np.diff(sids, prepend=-1)).tolist()
    out = []
    for a, b in zip(starts, [*starts[1:], sids.size], strict=True):
        first = float(vals[a])
        out.append(
            points.Block(
                int(sids[a]),
                int(steps[a]),
                first if np.isfinite(first) else None,
                int(steps[b - 1]),
                codec.pack_points(steps[a:b], vals[a:b]),
            )
        )
    return out


def write(s: Session, planned: Planned) -> None:
    """Store what :func:`plan` prepared, in the caller's transaction: the points, the
    counters, the rollups (the coarse levels brought up for the series that are due, once
    the counters say where they end)."""
    points.add(s, planned.rows)
    points.add_blocks(s, planned.blocks)
    points.count_new(s, planned.counts)
    point_rollups.add(s, planned.levels)
    point_rollups.roll(s, planned.roll)
