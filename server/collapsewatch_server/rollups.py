"""Rollups: a series' points summarised per step bin, at a few resolutions.

Level ``i`` cuts the steps into bins of ``LEVELS[i]`` steps (bin = step // width). A bin keeps
how many points fell in it, how many were not finite, its first and last step, the value at
its last step, and its finite extremes with their steps. Bins merge: the bins of a coarser
level are merged finer bins, a batch's new points merge into the stored bins (the ingest
processor does it in SQL), and a chart merges stored bins into its own columns. So a chart of
any series reads at most a few rows per column, whatever the series' length; the extremes keep
a spike or a collapse inside a bin visible.

Pure numpy: arrays in, arrays out. The repositories store and read them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

#: Bin widths in steps, finest first: each a multiple of the one before, so bins nest.
LEVELS: tuple[int, ...] = (16, 64, 256, 1024, 4096, 16384, 65536)
#: How far (in steps) a series' coarse levels may lag behind its last step before they are
#: brought up: more saves writes at ingest, costs a chart more finest bins to merge.
ROLL_STEPS = 1024


@dataclass(frozen=True)
class Bins:
    """Bins of one level (or points, as bins of one step), sorted by (series, first step).

    ``low``/``high`` are NaN where a bin holds no finite value; ``last`` is NaN where the value
    at the last step was not finite."""

    series: np.ndarray  # int64
    first_step: np.ndarray  # int64
    last_step: np.ndarray  # int64
    last: np.ndarray  # float64
    count: np.ndarray  # int64
    nonfinite: np.ndarray  # int64
    low: np.ndarray  # float64
    low_step: np.ndarray  # int64
    high: np.ndarray  # float64
    high_step: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.series.size)

    def take(self, index: np.ndarray) -> Bins:
        """The bins at ``index``."""
        return Bins(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def of_points(series: np.ndarray, steps: np.ndarray, values: np.ndarray) -> Bins:
    """Points (NaN for not finite) as bins of one step each, sorted by (series, step)."""
    order = np.lexsort((steps, series))
    s = np.asarray(series, dtype=np.int64)[order]
    t = np.asarray(steps, dtype=np.int64)[order]
    v = np.asarray(values, dtype=np.float64)[order]
    finite = np.isfinite(v)
    return Bins(
        series=s,
        first_step=t,
        last_step=t,
        last=v,
        count=np.ones(s.size, dtype=np.int64),
        nonfinite=(~finite).astype(np.int64),
        low=v,
        low_step=t,
        high=v,
        high_step=t,
    )


def _first_where(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each group starting at ``starts``, the first index where ``mask`` holds (every
    group has one)."""
    hits = np.flatnonzero(mask)
    return hits[np.searchsorted(hits, starts)]


def merge(parts: Bins, width: int, origin: int = 0) -> Bins:
    """Merge ``parts`` (sorted by (series, first step), none straddling a bin) into bins of
    ``width`` steps counted from ``origin``: bin ``(first_step - origin) // width``."""
    if not len(parts):
        return parts
    key = (parts.first_step - origin) // width
    change = (np.diff(parts.series) != 0) | (np.diff(key) != 0)
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    ends = np.concatenate((starts[1:], [len(parts)])) - 1
    counts = ends - starts + 1
    lows = np.where(np.isnan(parts.low), np.inf, parts.low)
    highs = np.where(np.isnan(parts.high), -np.inf, parts.high)
    group_low = np.minimum.reduceat(lows, starts)
    group_high = np.maximum.reduceat(highs, starts)
    at_low = _first_where(lows == np.repeat(group_low, counts), starts)
    at_high = _first_where(highs == np.repeat(group_high, counts), starts)
    empty = np.isinf(group_low)  # no finite value in the bin
    return Bins(
        series=parts.series[starts],
        first_step=parts.first_step[starts],
        last_step=parts.last_step[ends],
        last=parts.last[ends],
        count=np.add.reduceat(parts.count, starts),
        nonfinite=np.add.reduceat(parts.nonfinite, starts),
        low=np.where(empty, np.nan, group_low),
        low_step=parts.low_step[at_low],
        high=np.where(empty, np.nan, group_high),
        high_step=parts.high_step[at_high],
    )


def levels_of(points: Bins) -> list[Bins]:
    """The bins of every level for these points (from :func:`of_points`), finest first."""
    out: list[Bins] = []
    current = points
    for width in LEVELS:
        current = merge(current, width)
        out.append(current)
    return out


def levels_at_ingest(points: Bins, marks: np.ndarray) -> list[tuple[int, Bins]]:
    """(level, bins) ingest writes for new ``points`` (from :func:`of_points`): all of them in
    the finest level; those behind their series' mark (``marks``: the mark of each point's
    series), a late sync, in the coarser levels too."""
    out = [(0, merge(points, LEVELS[0]))]
    behind = np.flatnonzero(points.first_step < marks)
    if behind.size:
        out += coarse_levels(points.take(behind))
    return out


def coarse_levels(finest: Bins) -> list[tuple[int, Bins]]:
    """(level, bins) of every level but the finest for bins of the finest level (or points)."""
    out: list[tuple[int, Bins]] = []
    current = finest
    for level, width in enumerate(LEVELS[1:], start=1):
        current = merge(current, width)
        out.append((level, current))
    return out


def mark_after(last_step: np.ndarray) -> np.ndarray:
    """A series' mark once its coarse levels are brought up to its last step: the start of
    the finest bin holding that step (that bin may still grow)."""
    return last_step // LEVELS[0] * LEVELS[0]


def roll_due(marks: np.ndarray, last_steps: np.ndarray) -> np.ndarray:
    """Which series (their marks and last steps) are due to have their coarse levels brought
    up: grown ``ROLL_STEPS`` past their mark."""
    return mark_after(last_steps) - marks >= ROLL_STEPS


def joined(parts: Bins, tail: Bins, width: int) -> Bins:
    """Bins of ``width`` steps from the stored bins of that width (``parts``) and finest bins
    past the marks (``tail``), sorted by (series, first step)."""
    if not len(tail):
        return parts
    tail = merge(tail, width)
    both = Bins(
        **{
            f.name: np.concatenate((getattr(parts, f.name), getattr(tail, f.name)))
            for f in fields(parts)
        }
    )
    return merge(both.take(np.lexsort((both.first_step, both.series))), width)


def level_for(width: int) -> int | None:
    """The finest level whose bins are at least ``width`` steps wide (None past the last)."""
    for i, w in enumerate(LEVELS):
        if w >= width:
            return i
    return None


def as_points(bins: Bins) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's low and high as points (a bin with nothing finite as a NaN at its first
    step), in step order without repeats: the min/max downsampling of a long series."""
    empty = np.isnan(bins.low)
    steps = np.concatenate((bins.low_step[~empty], bins.high_step[~empty], bins.first_step[empty]))
    values = np.concatenate((bins.low[~empty], bins.high[~empty], bins.low[empty]))
    steps, index = np.unique(steps, return_index=True)
    return steps, values[index]
